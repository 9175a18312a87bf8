"""worker/seats.py: seats at the shared queue, shared by the workers of one host, as real
byte-range locks between real processes (a process's own locks never conflict with each
other, so every other worker here is a process of its own)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from droplet.worker.seats import Seats, seat_file_name

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX record locks, Linux")

QUEUE = "amqp://broker|ns.work"

# Another worker: takes a seat (or waits for one) and stamps it as its main loop would; then
# obeys one command a line: give (back), wait, waiting (are others waiting?).
_WORKER = """
import sys, threading, time
from droplet.worker.seats import Seats
seats = Seats(int(sys.argv[2]), sys.argv[3], sys.argv[1], stale_s=float(sys.argv[4]),
              on_seated=lambda: print("seated", flush=True))
def stamping():
    while True:
        seats.keep()
        time.sleep(0.02)
threading.Thread(target=stamping, daemon=True).start()
if seats.take():
    print("seated", flush=True)
else:
    seats.wait()  # (first: a worker said to wait is seen waiting)
    print("waiting", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "give":
        seats.give_back()
        print("given", flush=True)
    elif command == "wait":
        seats.wait()
    elif command == "waiting":
        print(seats.others_waiting(), flush=True)
"""


class Worker:
    def __init__(self, directory: Path, count: int = 1, queue: str = QUEUE,
                 stale_s: float = 2.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(directory), str(count), queue, str(stale_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.said = self.read()

    def read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        with_signal(self.proc.pid, signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def with_signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


Start = Callable[..., Worker]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Start]:
    started: list[Worker] = []

    def start(count: int = 1, stale_s: float = 2.0) -> Worker:
        worker = Worker(tmp_path, count=count, stale_s=stale_s)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _until(check: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_no_more_workers_are_seated_than_there_are_seats(tmp_path: Path, workers: Start) -> None:
    first, second = workers(count=2), workers(count=2)
    third = workers(count=2)
    assert [first.said, second.said, third.said] == ["seated", "seated", "waiting"]
    seats = Seats(2, QUEUE, str(tmp_path))
    try:
        assert not seats.take() and not seats.seated
    finally:
        seats.close()


def test_a_waiting_worker_is_seated_as_soon_as_a_seat_is_given_back(
        tmp_path: Path, workers: Start) -> None:
    holder = workers()
    seated = threading.Event()
    seats = Seats(1, QUEUE, str(tmp_path), on_seated=seated.set)
    try:
        assert holder.said == "seated" and not seats.take()
        seats.wait()
        assert not seated.wait(0.3), "the seat is held"
        holder.tell("give")
        assert holder.read() == "given"
        assert seated.wait(2.0) and seats.seated, "a waiter thread took it"
    finally:
        seats.close()


def test_a_worker_killed_on_its_seat_hands_it_to_a_waiter(tmp_path: Path, workers: Start) -> None:
    holder, waiter = workers(), workers()
    assert (holder.said, waiter.said) == ("seated", "waiting")
    holder.proc.kill()
    holder.proc.wait(10)
    assert waiter.read() == "seated", "the kernel dropped the dead worker's lock"


def test_a_stopped_seat_holder_gets_a_substitute_until_it_moves_again(
        tmp_path: Path, workers: Start) -> None:
    holder = workers(stale_s=0.3)
    assert holder.said == "seated"
    # Looked at with a second's patience 1.5 s after its first stamp: a holder that never
    # stamps again looks stuck; one kept off a core for 0.2 s on a crowded host does not.
    patient = Seats(1, QUEUE, str(tmp_path), stale_s=1.0)
    try:
        time.sleep(1.5)
        assert not patient.take(), "the holder stamps its seat: not stuck"
    finally:
        patient.close()
    seats = Seats(1, QUEUE, str(tmp_path), stale_s=0.3)
    try:
        os.kill(holder.proc.pid, signal.SIGSTOP)
        assert _until(seats.take, 5.0), "stopped: its seat looks stuck, a substitute consumes"
        assert seats.keep(), "still stuck: the substitute stays"
        os.kill(holder.proc.pid, signal.SIGCONT)
        assert _until(lambda: not seats.keep(), 5.0), "moving again: the substitute steps down"
        assert not seats.seated
    finally:
        seats.close()


def test_one_stuck_seat_gets_one_substitute(tmp_path: Path, workers: Start) -> None:
    """Two processes see the same stuck seat: only one of them stands in for it."""
    holder = workers(stale_s=0.3)
    assert holder.said == "seated"
    os.kill(holder.proc.pid, signal.SIGSTOP)
    time.sleep(0.5)
    first, second = workers(stale_s=0.3), workers(stale_s=0.3)
    assert sorted([first.said, second.said]) == ["seated", "waiting"]


def test_a_waiting_worker_is_seen_waiting(tmp_path: Path, workers: Start) -> None:
    seats = Seats(1, QUEUE, str(tmp_path))
    try:
        assert seats.take() and not seats.others_waiting(), "nobody waits"
        waiter = workers()
        assert waiter.said == "waiting" and seats.others_waiting()
        seats.give_back()
        assert waiter.read() == "seated"
        assert not seats.others_waiting(), "seated: it waits no more"
    finally:
        seats.close()


def test_the_seats_of_another_queue_are_its_own(tmp_path: Path, workers: Start) -> None:
    """Workers of another namespace (or broker) on the host keep their own consumers."""
    holder = workers()
    assert holder.said == "seated"
    seats = Seats(1, "amqp://broker|other.work", str(tmp_path))
    try:
        assert seats.take()
    finally:
        seats.close()


def test_a_seat_file_planted_as_a_symlink_turns_seats_off(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (tmp_path / seat_file_name(QUEUE)).symlink_to(target)
    seats = Seats(1, QUEUE, str(tmp_path))
    assert not seats.enabled and not seats.take()
    seats.close()


def test_seats_off_take_nothing(tmp_path: Path) -> None:
    seats = Seats(0, QUEUE, str(tmp_path))
    assert not seats.enabled and not seats.take() and not seats.others_waiting()
    assert not (tmp_path / seat_file_name(QUEUE)).exists()
