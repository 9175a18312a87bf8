"""The printed table of a chaos run: operations, faults and anomalies, by kind.

It is the run's whole evidence, so it names the run's parameters and anything it could not
do (such as restarting a broker it does not own), and gives examples of every anomaly kind.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from tests.chaos.checker import KINDS
from tests.chaos.history import ERROR, History
from tests.chaos.nemesis import FAULT_KINDS

EXAMPLES = 5


def _outcome(op_outcome: str | None, error: str | None) -> str:
    if op_outcome == ERROR:
        return f"error:{error}"
    return op_outcome or "none"


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else 0.0


def render(history: History, found: dict[str, list[str]], title: str, seconds: float) -> str:
    lines = [f"== {title} ==", ""]
    ops = history.ops()
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for op in ops:
        table[op.kind][_outcome(op.outcome, op.error)] += 1
    columns = sorted({c for row in table.values() for c in row},
                     key=lambda c: (c != "ok", c.startswith("error"), c))
    lines.append(f"operations: {len(ops)}, issued during {seconds:.0f}s")
    width = max([len(c) for c in columns] + [5]) + 2
    lines.append(f"  {'kind':<14}" + "".join(f"{c:>{width}}" for c in columns)
                 + f"{'total':>7}{'p50':>8}{'p99':>8}{'max':>8}")
    for kind in sorted(table):
        row = table[kind]
        took = sorted(o.end - o.start for o in ops if o.kind == kind and o.end is not None)
        cells = "".join(f"{row.get(c, 0):>{width}}" for c in columns)
        lines.append(f"  {kind:<14}{cells}{sum(row.values()):>7}" + "".join(
            f"{_quantile(took, q):>7.2f}s" for q in (0.5, 0.99, 1.0)))

    faults = history.faults()
    lines += ["", f"faults injected: {len(faults)}"]
    per_minute = 60.0 / max(seconds, 1.0)
    for kind in FAULT_KINDS:
        mine = [f for f in faults if f.kind == kind]
        sample = ", ".join(f"{f.target}@{f.start:.0f}s" for f in mine[:4])
        lines.append(f"  {kind:<22}{len(mine):>4}  ({len(mine) * per_minute:.1f}/min)  {sample}")

    total = sum(len(v) for v in found.values())
    lines += ["", f"anomalies: {total}"]
    for kind in KINDS:
        lines.append(f"  {kind:<27}{len(found.get(kind, [])):>6}")
    for kind in KINDS:
        examples = found.get(kind, [])
        if examples:
            lines.append(f"  -- {kind} (first {min(len(examples), EXAMPLES)} of "
                         f"{len(examples)}):")
            lines += [f"     {e[:400]}" for e in examples[:EXAMPLES]]
    lines += ["", "fault timeline:"] + [
        f"  {f.start:6.1f}-{f.end:6.1f}s  {f.kind:<20}  {f.target}  {f.note}" for f in faults]
    if history.notes:
        lines += ["", "notes:"] + [f"  {n}" for n in history.notes]
    return "\n".join(lines)
