"""The `droplet` command's options as a newcomer types them: global options after the
command, a log level that is not one, a --host that is not this machine's. No services."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from droplet.cli.main import build_parser, main


def test_global_options_are_taken_after_the_command_too() -> None:
    # `droplet status --namespace x` was "unrecognized arguments: --namespace x".
    args = build_parser().parse_args(["status", "--namespace", "x", "--etcd", "h:1",
                                      "--broker-url", "amqp://h", "--log-level", "debug"])
    assert (args.namespace, args.etcd, args.broker_url, args.log_level) == (
        "x", "h:1", "amqp://h", "DEBUG")


def test_global_options_before_the_command_still_work_and_after_it_win() -> None:
    parser = build_parser()
    before = parser.parse_args(["--namespace", "a", "--log-level", "warning", "status"])
    assert (before.namespace, before.log_level, before.etcd) == ("a", "WARNING", None)
    both = parser.parse_args(["--namespace", "a", "status", "--namespace", "b"])
    assert both.namespace == "b"
    assert parser.parse_args(["status"]).log_level == "INFO"


def test_a_log_level_that_is_none_is_a_usage_error_not_a_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    # It was ValueError: Unknown level: 'LOUD', with a traceback.
    with pytest.raises(SystemExit) as exit_:
        main(["--log-level", "LOUD", "status"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'LOUD'" in err and "Traceback" not in err


def test_a_dashboard_host_that_is_not_this_machines_names_host_not_port(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--host", "999.1.1.1", "--port", "8375"]) == 1
    err = capsys.readouterr().err
    assert "give --host an address of this machine" in err
    assert "choose another --port" not in err


def test_a_reader_that_leaves_the_pipe_is_no_traceback(tmp_path: Path) -> None:
    # `droplet status | head -2` ended in a BrokenPipeError traceback.
    script = ("import sys\n"
              "import droplet.cli.status as status\n"
              "status.collect = lambda settings: {'namespace': 'n', 'schedulers': [],\n"
              "    'workers': [], 'dags': [], 'functions': ['f%d' % i for i in range(99999)],\n"
              "    'queues': {}}\n"
              "from droplet.cli.main import main\n"
              "sys.exit(main(['status']))\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(f"{sys.executable} -c {shlex.quote(script)} | head -c 10",
                          shell=True, cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.stdout == "namespace "
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_dead_letters_refuses_a_limit_below_one(
        limit: str, capsys: pytest.CaptureFixture[str]) -> None:
    # It inspected nothing and printed "0 dead letters inspected" with letters waiting.
    assert main(["dead-letters", "--limit", limit]) == 1
    assert f"--limit must be at least 1, not {limit}" in capsys.readouterr().err
