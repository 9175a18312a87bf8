"""worker/seats.py under races between threads of one worker (the keeper giving the seat
back, a waiter thread granted one, the main thread taking one) and against hostile stamps:
what a worker believes it holds is what the kernel says it holds."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from droplet.worker import seats as seats_module
from droplet.worker.seats import Seats, seat_file_name
from tests.unit import test_seats
from tests.unit.test_seats import QUEUE, Start, _until

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="POSIX record locks, Linux"),
              pytest.mark.timeout(30)]

workers = test_seats.workers  # (the fixture: other workers, as processes of their own)


def _slow_unlocks(seats: Seats, threads: str, monkeypatch: pytest.MonkeyPatch
                  ) -> tuple[threading.Event, threading.Event]:
    """Unlocks in the kernel by threads whose name starts with `threads` stop half-way:
    `inside` is set there, and they go on once `go` is."""
    inside, go = threading.Event(), threading.Event()
    unlock = seats._unlock

    def slow_unlock(offset: int) -> None:
        if threading.current_thread().name.startswith(threads):
            inside.set()
            go.wait(5)
        unlock(offset)

    monkeypatch.setattr(seats, "_unlock", slow_unlock)
    return inside, go


def _take_meanwhile(seats: Seats, go: threading.Event, workers: Start) -> None:
    """The main thread takes a seat while another thread is half-way through an unlock (it
    goes on 0.2 s later); then one seat must have one holder, whoever it is."""
    threading.Timer(0.2, go.set).start()
    seats.take()  # on the main thread, as the worker's loop does
    time.sleep(0.3)
    other = workers()
    assert not (seats.seated and other.said == "seated"), "one seat, two holders"


def test_a_seat_given_back_while_the_main_thread_takes_it_is_not_held_twice(
        tmp_path: Path, workers: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keeper gives the seat back (a run went long) just as the run ends and the main
    thread takes a seat: the main thread must not count on a lock the keeper then drops."""
    seats = Seats(1, QUEUE, str(tmp_path))
    inside, go = _slow_unlocks(seats, "keeper", monkeypatch)
    try:
        assert seats.take()
        keeper = threading.Thread(target=seats.give_back, name="keeper")
        keeper.start()
        assert inside.wait(5)
        _take_meanwhile(seats, go, workers)
        keeper.join(5)
    finally:
        go.set()
        seats.close()


def test_a_waiter_granted_a_seat_no_longer_wanted_does_not_drop_the_main_threads(
        tmp_path: Path, workers: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter thread is granted a seat after the worker stopped wanting it, and lets it go;
    meanwhile the main thread takes that very seat (the process holds it already)."""
    holder = workers()
    assert holder.said == "seated"
    seats = Seats(1, QUEUE, str(tmp_path))
    inside, go = _slow_unlocks(seats, "droplet-seat", monkeypatch)
    try:
        assert not seats.take()
        seats.wait()
        time.sleep(0.2)  # the waiter thread blocks in the kernel for seat 0
        seats._wanted.clear()  # no longer wanted (as given back during a long run)
        holder.tell("give")
        assert holder.read() == "given"
        assert inside.wait(5), "the waiter was granted the seat and lets it go"
        _take_meanwhile(seats, go, workers)
    finally:
        go.set()
        seats.close()


def test_a_stamp_from_the_future_does_not_keep_a_stopped_holders_seat_forever(
        tmp_path: Path, workers: Start) -> None:
    """Garbage in the file (another boot's clock, a planted value): a stamp far ahead of
    now is no proof of life."""
    holder = workers(stale_s=0.3)
    assert holder.said == "seated"
    os.kill(holder.proc.pid, signal.SIGSTOP)
    future = time.monotonic_ns() + 3600 * 10**9
    with open(tmp_path / seat_file_name(QUEUE), "r+b") as planted:
        planted.seek(seats_module._STAMPS)
        planted.write(future.to_bytes(8, "little"))
    seats = Seats(1, QUEUE, str(tmp_path), stale_s=0.3)
    try:
        assert _until(seats.take, 2.0), "the stopped holder's seat gets a substitute"
    finally:
        seats.close()


def test_a_seat_file_others_may_open_turns_seats_off(tmp_path: Path) -> None:
    """Another user able to open it could lock every seat and every substitute's place: no
    worker of ours would consume the shared queue at all."""
    path = tmp_path / seat_file_name(QUEUE)
    path.write_bytes(b"")
    path.chmod(0o666)
    seats = Seats(1, QUEUE, str(tmp_path))
    try:
        assert not seats.enabled
    finally:
        seats.close()


def test_a_waiting_worker_is_woken_for_any_seat_given_back_also_beyond_the_eighth(
        tmp_path: Path, workers: Start) -> None:
    """A host of 10 cores, 10 seats held: the one given back is the tenth. A waiting
    worker must take it at once, not at its main loop's next look (half a second on)."""
    holders = [workers(count=10) for _ in range(10)]
    assert [h.said for h in holders] == ["seated"] * 10
    seated = threading.Event()
    seats = Seats(10, QUEUE, str(tmp_path), on_seated=seated.set)
    try:
        assert not seats.take()
        seats.wait()
        time.sleep(0.2)
        for holder in holders:
            holder.tell("give")
            assert holder.read() == "given"
            assert seated.wait(1.0), "the seat given back went to the waiting worker"
            seated.clear()
            seats.give_back()
            holder.tell("wait")  # it wants one again: it takes the one just given back
            assert holder.read() == "seated"
            seats.wait()
    finally:
        seats.close()


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_a_seat_file_of_another_user_turns_seats_off(tmp_path: Path) -> None:
    path = tmp_path / seat_file_name(QUEUE)
    path.write_bytes(b"")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    seats = Seats(1, QUEUE, str(tmp_path))
    try:
        assert not seats.enabled and not seats.take()
    finally:
        seats.close()


def test_an_unusable_directory_turns_seats_off(tmp_path: Path) -> None:
    """TMPDIR gone (or not writable): every worker consumes, as without seats."""
    seats = Seats(1, QUEUE, str(tmp_path / "gone"))
    try:
        assert not seats.enabled and not seats.take() and not seats.others_waiting()
        seats.wait()  # (nothing to wait for, no thread started)
        assert not seats._threads
    finally:
        seats.close()
