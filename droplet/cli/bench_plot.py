"""`droplet bench --plot FILE.png`: the figures of a bench run, drawn with matplotlib.

Three panels: how latencies are distributed (one curve per kind of call, against the raw
pika floor when one was measured), each timed call in the order it ran (warm-up effects and
outliers show there, which percentiles hide), and the throughput figures side by side. The
bench's JSON output is not changed by plotting; the PNG is an extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from droplet.errors import ConfigurationError

LABELS = {"call": "one call (stored)", "direct_call": "one call (direct)",
          "dag2": "2-function DAG (direct)"}


def check_plot_path(path: str) -> None:
    """Refuses, before a bench runs for minutes, a path the figures could not be written to."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ConfigurationError(f"--plot writes a PNG: give a FILE.png, not {path!r}")
    if not target.parent.resolve().is_dir():
        raise ConfigurationError(f"--plot: no directory {str(target.parent)!r}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "--plot needs matplotlib: pip install 'droplet[dashboard]'") from None


def plot_bench(out: dict[str, Any], samples: dict[str, list[float]], path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    figure = Figure(figsize=(15, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    floor = out.get("floor", {})
    floor_p50 = floor.get("hops3_p50_ms")

    for kind, values in samples.items():
        ordered = sorted(values)
        share = [100.0 * (i + 1) / len(ordered) for i in range(len(ordered))]
        left.plot(ordered, share, label=LABELS.get(kind, kind), linewidth=2)
    if isinstance(floor_p50, (int, float)):
        left.axvline(floor_p50, color="gray", linestyle="--", label="pika floor p50 (3 hops)")
    left.set_xscale("log")
    left.xaxis.set_major_formatter(ScalarFormatter())
    left.set_xlabel("latency, client to result (ms, log scale)")
    left.set_ylabel("% of calls at most this fast")
    left.set_title("Latency distribution")
    left.grid(True, which="both", alpha=0.3)
    left.legend(loc="lower right", fontsize=8)

    for kind, values in samples.items():
        middle.plot(range(1, len(values) + 1), values, ".", markersize=3,
                    label=LABELS.get(kind, kind))
    middle.set_xlabel("timed call, in order")
    middle.set_ylabel("latency (ms)")
    middle.set_title("Each timed call")
    middle.grid(True, alpha=0.3)
    middle.legend(loc="upper right", fontsize=8)

    bars = _throughput(out)
    names = [name for name, _ in bars]
    right.barh(names, [value for _, value in bars], color="#2563eb")
    for index, (_, value) in enumerate(bars):
        right.text(value, index, f" {value:,.0f}", va="center", fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("calls (or messages) per second")
    right.set_title("Throughput")
    right.grid(True, axis="x", alpha=0.3)

    cluster = out.get("cluster", {})
    figure.suptitle(f"droplet bench: {cluster.get('schedulers', '?')} scheduler(s), "
                    f"{cluster.get('workers', '?')} worker(s)", fontsize=11)
    figure.savefig(path)


def _throughput(out: dict[str, Any]) -> list[tuple[str, float]]:
    bars = []
    if "burst_calls_per_s" in out:
        bars.append(("burst", float(out["burst_calls_per_s"])))
    if "map_calls_per_s" in out:
        bars.append(("client.map", float(out["map_calls_per_s"])))
    floor = out.get("floor", {}).get("hops3_burst_msgs_per_s")
    if isinstance(floor, (int, float)):
        bars.append(("pika floor burst", float(floor)))
    for workers, value in out.get("sweep", {}).items():
        bars.append((f"burst, {workers} worker(s)", float(value)))
    return bars
