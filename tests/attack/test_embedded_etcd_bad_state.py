"""Attack: `droplet up`'s embedded etcd with a damaged data directory, a state directory that
cannot be made, and its port held by something else.

- Damaged data (a garbage bbolt file, as after a disk fault): etcd panics, and the error
  quoted the last 12 lines of its log, which are all Go stack frames; "failed to open
  database" was above them, and the fix said only "read etcd's words above". Now the error
  quotes etcd's messages without the stack and says the data is damaged and what to do.
- A --state-dir that cannot be made (a file in its path; a read-only disk): a Python
  traceback (NotADirectoryError) instead of "droplet: ..." naming the directory.
- DROPLET_ETCD_BINARY naming a missing or non-executable file: a traceback
  (FileNotFoundError, PermissionError from subprocess).
- Held: a port already taken (etcd's "address already in use", with the fix).
Run: .venv/bin/python -m pytest -q tests/attack/test_embedded_etcd_bad_state.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from droplet.cli.etcd_local import LocalEtcd, find_etcd, find_etcd_binary
from droplet.errors import ConfigurationError

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(find_etcd_binary() is None, reason="needs an etcd binary"),
]


def _droplet_up(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "droplet.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=45)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_damaged_etcd_data_is_named_as_such(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "member" / "snap").mkdir(parents=True)
    (data / "member" / "wal").mkdir()
    (data / "member" / "snap" / "db").write_bytes(os.urandom(64 * 1024))
    etcd = LocalEtcd(data, binary=find_etcd())
    with pytest.raises(ConfigurationError) as failed:
        etcd.start(timeout_s=20)
    message = str(failed.value)
    assert "failed to open database" in message, message  # etcd's own words, not its stack
    assert "goroutine" not in message and "backend.newBackend" not in message, message
    assert "damaged" in message and str(data) in message, message


@pytest.mark.parametrize("secret", ["made-by-up", "configured"])
def test_a_state_dir_that_cannot_be_made_is_an_error_not_a_traceback(
    tmp_path: Path, secret: str,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state = blocker / "state"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DROPLET_") or k == "DROPLET_ETCD_BINARY"}
    if secret == "configured":
        env["DROPLET_SIGNING_KEY"] = "k" * 32  # then the embedded etcd is first to write
    done = _droplet_up("--etcd", f"127.0.0.1:{_free_port()}", "up", "--workers", "1",
                       "--state-dir", str(state), env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("droplet: ") and str(state) in done.stderr, done.stderr


def test_a_taken_port_is_named_with_the_fix(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)  # accepts and never answers
        port = holder.getsockname()[1]
        env = dict(os.environ, DROPLET_SIGNING_KEY="k" * 32)
        done = _droplet_up("--etcd", f"127.0.0.1:{port}", "up", "--workers", "1",
                           "--state-dir", str(tmp_path / "state"), env=env)
    assert done.returncode == 1, done.stderr
    assert "address already in use" in done.stderr
    assert f"something else listens on 127.0.0.1:{port}" in done.stderr


@pytest.mark.parametrize("binary", ["missing", "not-executable"])
def test_an_etcd_binary_that_cannot_run_is_an_error_not_a_traceback(
    tmp_path: Path, binary: str,
) -> None:
    path = tmp_path / "etcd"
    if binary == "not-executable":
        path.write_text("")
    env = dict(os.environ, DROPLET_SIGNING_KEY="k" * 32, DROPLET_ETCD_BINARY=str(path))
    done = _droplet_up("--etcd", f"127.0.0.1:{_free_port()}", "up", "--workers", "1",
                       "--state-dir", str(tmp_path / "state"), env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"cannot run etcd {path}" in done.stderr and "DROPLET_ETCD_BINARY" in done.stderr
