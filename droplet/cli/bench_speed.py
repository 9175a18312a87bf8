"""How fast this machine's CPUs ran during each phase of `droplet bench`.

The floor, the peers and Droplet are measured one after another, and on a shared VM the speed
of a virtual CPU moves under them: on the development VM a fixed loop took 2.5 ms of CPU, then
5.5 ms a second later, then 2.5 ms again, and a worker's CPU per durable call doubled in its
slow stretches. A ratio between two phases then says as much about the host as about either
system. So a sampler process times the loop every `SAMPLE_EVERY_S` through the whole run, and
each phase gets the mean of the samples taken while it ran (a phase of seconds averages over
the flips; one probe as it starts would be a coin toss).

The loop is timed in CPU time of its own thread, not wall time: waiting for a core that the
measured processes keep busy does not count, so the figure follows the host, not the load the
bench itself puts on the guest. The sampler costs 1-2% of one core.

The sampler is this file run by its path in an isolated interpreter, so it imports nothing but
the standard library (keep it so): `python -m droplet...` would look for Droplet in the bench's
working directory first, and from another checkout it ran that one, or failed to import.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROBE_ITERATIONS = 20_000  # about 2.5 ms of CPU on the development VM at its usual speed
SAMPLE_EVERY_S = 0.25
MIN_SAMPLES = 8  # a phase with fewer says nothing about its speed (it is left out of drift)
DRIFT_NOTED = 1.25  # slowest phase / fastest phase of a run worth a note


def probe_cpu_ms(iterations: int = PROBE_ITERATIONS) -> float:
    """The CPU time, in ms, this thread spends on a loop of dict and integer work (the
    interpreter's bread and butter, as in every process a call crosses)."""
    started = time.thread_time()
    table: dict[int, int] = {}
    total = 0
    for i in range(iterations):
        table[i & 255] = i
        total += table.get(i & 127, 0)
    return (time.thread_time() - started) * 1e3


def sample(path: Path, every_s: float, parent: int) -> None:
    """The sampler: appends "monotonic seconds, CPU ms" lines to path until its parent, the
    bench, is gone; then it removes the file, which nobody is left to read (a bench that is
    killed leaves neither sampler nor file behind). The bench's pid comes from the bench: one
    that died while this interpreter started up would otherwise be taken for init or a
    subreaper, and the sampler would run on forever."""
    # Ctrl-C reaches the whole process group: the sampler is ended by the bench's stop(), after
    # it has read the samples, not by a KeyboardInterrupt and its traceback on the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with path.open("a", encoding="ascii") as out:
        while os.getppid() == parent:
            at = time.monotonic()  # the system's clock: the bench reads the same one
            out.write(f"{at:.6f} {probe_cpu_ms():.4f}\n")
            out.flush()
            time.sleep(every_s)
    path.unlink(missing_ok=True)


def by_phase(marks: Sequence[tuple[str, float]], ended: float,
             samples: Sequence[tuple[float, float]]) -> dict[str, list[float]]:
    """The samples taken during each phase: from its mark to the next one (the last, to
    `ended`). A phase marked twice keeps the samples of both stretches."""
    found: dict[str, list[float]] = {phase: [] for phase, _ in marks}
    bounds = [at for _, at in marks[1:]] + [ended] if marks else []
    for (phase, start), end in zip(marks, bounds, strict=True):
        found[phase] += [ms for at, ms in samples if start <= at < end]
    return found


class SpeedLog:
    """The machine's speed through one bench run: start(), mark() as each phase starts,
    stop() at the end (always: it ends the sampler), then report() and note()."""

    def __init__(self, every_s: float = SAMPLE_EVERY_S) -> None:
        handle, name = tempfile.mkstemp(prefix="droplet-bench-speed-", suffix=".txt")
        os.close(handle)
        self._path = Path(name)
        self._every_s = every_s
        self._sampler: subprocess.Popen[bytes] | None = None
        self._failed: str | None = None  # why there are no samples, if the sampler did not run
        self._marks: list[tuple[str, float]] = []
        self.phases: dict[str, list[float]] = {}

    def start(self, timeout_s: float = 10.0) -> None:
        """Starts the sampler and waits for its first sample, so that its own start-up (an
        interpreter) is over before the first phase. A sampler that cannot start does not stop
        the bench: note() says so."""
        try:
            self._sampler = subprocess.Popen(
                [sys.executable, "-I", __file__, str(self._path), str(self._every_s),
                 str(os.getpid())], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except OSError as exc:
            self._failed = f"its sampler did not start ({exc})"
            return
        deadline = time.monotonic() + timeout_s
        while (not _read(self._path) and self._sampler.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.02)

    def mark(self, phase: str) -> None:
        self._marks.append((phase, time.monotonic()))

    def stop(self) -> None:
        ended = time.monotonic()
        if self._sampler is not None:
            if (code := self._sampler.poll()) is not None:
                self._failed = f"its sampler ended early, with status {code}"
            self._sampler.terminate()
            try:
                self._sampler.wait(5)
            except subprocess.TimeoutExpired:
                self._sampler.kill()
                self._sampler.wait()
            self._sampler = None
        self.phases = by_phase(self._marks, ended, _read(self._path))
        self._path.unlink(missing_ok=True)

    def means(self) -> dict[str, float]:
        """Each phase's mean CPU ms per loop, for the phases with enough samples."""
        return {phase: statistics.fmean(ms) for phase, ms in self.phases.items()
                if len(ms) >= MIN_SAMPLES}

    def drift(self) -> float:
        """Slowest phase over fastest (1.0 with fewer than two phases to compare)."""
        means = list(self.means().values())
        return max(means) / min(means) if len(means) > 1 and min(means) > 0 else 1.0

    def note(self) -> str | None:
        if self._failed is not None:  # (drift() is 1.0 then: it must not read as a steady machine)
            return (f"the machine's speed was not sampled through the run: {self._failed}; "
                    "whether it moved between phases is unknown")
        means, drift = self.means(), self.drift()
        if drift <= DRIFT_NOTED:
            return None
        slowest, fastest = max(means, key=means.__getitem__), min(means, key=means.__getitem__)
        # In the order they ran: a machine that sped up must not read as one that slowed.
        first, then = sorted((fastest, slowest), key=list(means).index)
        return (f"the machine's speed moved during this run: a fixed loop took "
                f"{means[first]:.2f} ms of CPU on average during {first} and "
                f"{means[then]:.2f} ms during {then} ({drift:.2f}x): ratios between those "
                "phases may be off by as much; repeat the run")

    def report(self) -> dict[str, Any]:
        return {"probe_cpu_ms": self.means(),
                "samples": {phase: len(ms) for phase, ms in self.phases.items()},
                "drift": self.drift()}


def _read(path: Path) -> list[tuple[float, float]]:
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except OSError:
        return []
    samples = []
    for line in lines:
        fields = line.split()
        if len(fields) == 2:  # (a line cut by the sampler's end is skipped)
            samples.append((float(fields[0]), float(fields[1])))
    return samples


if __name__ == "__main__":
    sample(Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
