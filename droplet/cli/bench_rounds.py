"""Rounds of `droplet bench`: the phases compared with one another (the floor, each peer,
Droplet; or the fleet sizes of `--sweep`) run again and again, every other round backwards,
and each figure is the median over its rounds.

Why: on the development VM, the same bench run three times in ten minutes put Droplet's
durable p50 at 1.28x, 1.68x and 2.10x the 3-hop floor, and its ratio to Celery at 0.68x to
0.93x; the machine, not the systems, moved most. Phases measured one after another in one
order give the drift to whichever runs last. Alternating the order over an even number of
rounds makes a steady drift weigh on every phase alike, and a median keeps one bad minute
from deciding a figure. `--rounds 1` (the default) is the single pass it always was.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from droplet.cli.bench_measure import BenchError

T = TypeVar("T")


def alternating(items: Sequence[T], rounds: int) -> Iterator[tuple[int, T]]:
    """(round, item) in the order the rounds run them: each round runs every item once, and
    every other round goes backwards (a, b, c, then c, b, a). One by one, as they run: a
    huge round count is no list to build before the bench begins."""
    for round_index in range(rounds):
        for item in items if round_index % 2 == 0 else items[::-1]:
            yield round_index, item


def check_rounds(flag: str, rounds: int) -> None:
    """Refuses a count of rounds that is neither 1 nor even: under a steady drift, the median
    of an odd number of rounds over 1 is its middle round alone, which ran the phases in one
    order (the bias of a single round, reversed)."""
    if rounds != 1 and (rounds < 1 or rounds % 2):  # (0 and -2 are even: not "odd" for them)
        why = ("nothing is measured in fewer than 1" if rounds < 1 else "over an odd number "
               "of rounds a steady drift favours some of what is compared")
        raise BenchError(f"{flag} takes 1 or an even number, not {rounds}: {why}")


def is_number(value: Any) -> bool:
    """A figure, not a flag: JSON's true and false are ints to Python, and a peer's `true`
    would otherwise be a median of 1 or a divisor."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ratio(ours: Any, theirs: Any) -> float | None:
    """ours / theirs when both are figures (None otherwise: a peer's script may print a
    string, a flag or a null where a number was expected, and the median of the rounds keeps
    the first round's; dividing by it ended the bench with a TypeError after every round had
    been measured, its figures lost)."""
    return ours / theirs if is_number(ours) and is_number(theirs) and theirs else None


def medians(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The runs merged figure by figure: a number is the median over the runs that have it, a
    dict is merged the same way, anything else is the first run's. A figure one round could
    not measure (a peer that failed once, or printed null or NaN for it) is the median of the
    rounds that did: a null first would otherwise hide the numbers of every later round, and
    a NaN, which compares false with everything, leaves the sort for the median unsorted."""
    merged: dict[str, Any] = {}
    keys = list(dict.fromkeys(key for run in runs for key in run))
    for key in keys:
        values = [run[key] for run in runs if key in run]
        values = [v for v in values if v is not None and v == v] or values  # (NaN != NaN)
        if all(is_number(v) for v in values):
            merged[key] = statistics.median(values)
        elif all(isinstance(v, Mapping) for v in values):
            merged[key] = medians(values)
        else:
            merged[key] = values[0]
    return merged


@contextmanager
def kept_on_failure(runs: Sequence[Mapping[str, Any]]) -> Iterator[None]:
    """A bench that ends in an error or an interrupt prints the figures of the rounds measured
    so far to stderr, as JSON: one call past its timeout in the last of `--rounds 4` (a loaded
    VM) threw away the minutes of every round before it. Not on stdout, whose last line is
    the report of a bench that finished."""
    try:
        yield
    except BaseException:
        if any(runs):
            print("droplet bench: figures of the rounds measured before it ended: "
                  + json.dumps(list(runs), sort_keys=True, default=str), file=sys.stderr)
        raise
