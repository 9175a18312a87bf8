"""The `droplet` command: up, scheduler, worker, status, dashboard, bench, dead-letters."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from droplet.errors import DropletError
from droplet.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(
        broker_url=args.broker_url, etcd_endpoints=args.etcd, namespace=args.namespace
    )
    return settings if args.command == "up" else settings.with_local_fleet_secret()


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--broker-url", default=default,
                        help="RabbitMQ URL (env DROPLET_BROKER_URL)")
    parser.add_argument("--etcd", default=default,
                        help="etcd endpoints host:port[,...] (env DROPLET_ETCD)")
    parser.add_argument("--namespace", default=default,
                        help="prefix of queues and keys (env DROPLET_NAMESPACE)")
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        default="INFO" if default is None else default,
                        help="DEBUG, INFO (the default), WARNING, ERROR or CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="droplet", description=__doc__)
    _global_options(parser, None)
    # The global options are taken after the command too (`droplet status --namespace x`, as
    # a newcomer types them): there they override what came before, and default to nothing.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common],
                        help="run a local cluster (scheduler + workers) in the foreground")
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--state-dir", help="where an embedded etcd keeps its data")
    up.add_argument("--tagged-worker", action="append", default=[], metavar="TAGS",
                    help="one more worker with these resource tags (gpu=1,mem=16); repeat it")

    sub.add_parser("scheduler", parents=[common], help="run one scheduler")

    worker = sub.add_parser("worker", parents=[common], help="run one worker")
    worker.add_argument("--id", help="worker id (default: <host>-<pid>)")
    worker.add_argument("--resources", metavar="TAGS",
                        help="resource tags, gpu=1,mem=16 (env DROPLET_WORKER_RESOURCES)")

    status = sub.add_parser("status", parents=[common], help="show the fleet")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    board = sub.add_parser("dashboard", parents=[common],
                           help="serve the web dashboard of the fleet")
    board.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    board.add_argument("--port", type=int, default=8375, help="port to listen on (8375)")
    board.add_argument("--interval", type=float, default=2.0,
                       help="seconds between samples of etcd and the broker (2)")

    dead = sub.add_parser("dead-letters", parents=[common],
                          help="inspect, requeue or purge refused messages")
    dead.add_argument("--json", action="store_true", help="machine-readable output")
    dead.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    action = dead.add_mutually_exclusive_group()
    action.add_argument("--requeue", action="store_true",
                        help="send them back to the queue they died in")
    action.add_argument("--purge", action="store_true", help="drop them")

    sub.add_parser("migrate-queues", parents=[common],
                   help="re-create queues declared with other arguments "
                   "(an older version, another max_priority or queue_type), keeping their "
                   "messages; run it "
                   "with the fleet stopped")

    bench = sub.add_parser("bench", parents=[common],
                           help="measure call and DAG latency and throughput")
    bench.add_argument("--workers", type=int, default=2,
                       help="workers of the local cluster (default 2)")
    bench.add_argument("--external", action="store_true",
                       help="measure the configured cluster instead of starting one")
    bench.add_argument("--calls", type=int, help="sequential calls timed (default 300)")
    bench.add_argument("--dag-calls", type=int, help="sequential DAG calls timed (default 300)")
    bench.add_argument("--burst", type=int, help="calls submitted at once (default 2000)")
    bench.add_argument("--map", type=int, help="calls through client.map (default 5000)")
    bench.add_argument("--warmup", type=int, help="untimed calls first (default 50)")
    bench.add_argument("--quick", action="store_true", help="tiny counts, for smoke tests")
    bench.add_argument("--sweep", help="burst again on fresh clusters of these sizes: 1,2,4")
    bench.add_argument("--sweep-rounds", type=int, metavar="N",
                       help="start each size of --sweep N times (1 or an even N), every "
                            "other round in reverse order, and report the medians (default 4; "
                            "1 with --quick)")
    bench.add_argument("--rounds", type=int, metavar="N",
                       help="run the floor, the peers and Droplet N times (1 or an even N), "
                            "every other round in reverse order, and report the medians "
                            "(default 1)")
    bench.add_argument("--floor", metavar="PATH", help="raw-pika floor script to compare with")
    bench.add_argument("--peers", metavar="DIR",
                       help="run pika_floor.py, celery_bench.py, dramatiq_bench.py from DIR "
                            "(those present) first, and print the ratios; the peers' scripts "
                            "get --n CALLS --burst BURST")
    bench.add_argument("--peers-python", metavar="PYTHON",
                       help="the interpreter that has the peers' packages (default: this one)")
    bench.add_argument("--breakdown", action="store_true",
                       help="also trace calls and print where their time goes, stage by stage")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="also draw the figures (latencies, throughput) into this PNG")
    bench.add_argument("--progress", action="store_true",
                       help="progress bar on stderr even when it is not a terminal")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        settings = _settings(args)
        if args.command == "up":
            from droplet.cli.up import run_up

            return run_up(settings, args.workers, args.state_dir, args.log_level,
                          tagged=args.tagged_worker)
        if args.command == "scheduler":
            from droplet.cli.services import run_scheduler

            return run_scheduler(settings)
        if args.command == "worker":
            from droplet.cli.services import run_worker

            if args.resources is not None:  # checked here, before anything connects
                from droplet.resources import parse

                settings = settings.with_(
                    worker_resources=args.resources if parse(args.resources) else None)
            return run_worker(settings, args.id)
        if args.command == "status":
            from droplet.cli.status import run_status

            return run_status(settings, args.json)
        if args.command == "dashboard":
            from droplet.cli.dashboard import run_dashboard

            return run_dashboard(settings, args.host, args.port, args.interval)
        if args.command == "dead-letters":
            from droplet.cli.dead_letters import run_dead_letters

            return run_dead_letters(settings, args.json, args.limit, args.requeue, args.purge)
        if args.command == "migrate-queues":
            from droplet.cli.migrate import run_migrate

            return run_migrate(settings)
        if args.command == "bench":
            from droplet.cli.bench import run_bench

            return run_bench(settings, args)
    except DropletError as exc:
        print(f"droplet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `droplet status | head`: the reader left; no traceback
        _silence_stdout()
        return 1
    return 2


def _silence_stdout() -> None:
    """What is still buffered for a closed pipe would fail again at exit: send it nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
