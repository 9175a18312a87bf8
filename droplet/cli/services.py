"""`droplet scheduler` and `droplet worker`: one service in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from types import FrameType

from droplet import heap
from droplet.errors import ConfigurationError
from droplet.metrics import Metrics
from droplet.runtime import broker_factory, open_kv
from droplet.settings import Settings

log = logging.getLogger(__name__)


def _on_stop_signals(callback: object) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        callback()  # type: ignore[operator]

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def require_signed_off_loopback(settings: Settings) -> Settings:
    """Anyone who can publish to an unsigned fleet's broker runs code on its workers: refuse
    to serve one whose broker or etcd is reachable from other machines, unless the
    configuration says so."""
    settings = settings.with_secret_file()
    exposed = settings.unsigned_exposure()
    if exposed:
        raise ConfigurationError(
            f"refusing to run without a fleet secret against {', '.join(exposed)}: anyone "
            "who can publish there could run code on the workers. Set signing_key (or "
            "signing_key_file) to a shared secret, or allow_unsigned = true to accept that."
        )
    return settings


def _settle_heap(metrics: Metrics) -> None:
    """Once the service is built: its start-up objects out of the collector's sight, and the
    pauses the collector still makes in its metrics (see heap.py)."""
    metrics.registry.register(heap.GcPauses().start())
    heap.settle()


def run_scheduler(settings: Settings) -> int:
    from droplet.scheduler.service import SchedulerService

    settings = require_signed_off_loopback(settings)
    kv = open_kv(settings)
    service = SchedulerService(settings, kv, broker_factory(settings, "droplet-scheduler"))
    stop = threading.Event()
    _on_stop_signals(stop.set)
    _settle_heap(service.metrics)
    service.start()
    while not stop.wait(1.0):
        pass
    service.stop()
    kv.close()
    return 0


def run_worker(settings: Settings, worker_id: str | None) -> int:
    from droplet.broker_config.names import check_name
    from droplet.store.keys import StoreKeys
    from droplet.worker.recorder import CallRecorder
    from droplet.worker.service import WorkerService

    if worker_id is not None:
        try:
            check_name("worker id", worker_id)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
    settings = require_signed_off_loopback(settings)
    kv = open_kv(settings)
    # What the worker runs is recorded for `droplet dashboard` (recent_calls = 0: not at all).
    recorder = (CallRecorder(kv, StoreKeys(settings.etcd_prefix), settings.recent_calls,
                             settings.status_interval_s) if settings.recent_calls > 0 else None)
    service = WorkerService(settings, kv, broker_factory(settings, "droplet-worker"), worker_id,
                            middleware=[recorder] if recorder is not None else [])
    if recorder is not None:
        recorder.start(service.id, service.incarnation, lambda: service.membership.lease_id)
    _on_stop_signals(service.stop)
    _settle_heap(service.metrics)
    try:
        service.run()
    finally:
        if recorder is not None:
            recorder.stop()
    kv.close()
    _exit_past_stray_threads()
    return 0


def _exit_past_stray_threads() -> None:
    """A function that started a thread (not a daemon) and returned left it running, and
    Python's exit waits for every such thread: the stopped worker never exited, and stopping
    it took its supervisor's kill timeout (`droplet up`'s 10 s, docker's, systemd's). The
    worker's own threads are daemons and stopped by now: whatever else runs is named, and the
    process exits without waiting for it."""
    stray = [t.name for t in threading.enumerate()
             if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not stray:
        return
    log.warning("exiting without the threads user code left running: %s", ", ".join(stray))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (user code may have closed them)
            stream.flush()
    os._exit(0)
