"""Attack: TLS files that exist but are not what Droplet can use.

1. A passphrase-protected client key (what `openssl req -newkey` makes unless told -nodes):
   Python's ssl, given no password, lets OpenSSL ask for one on the terminal, so a worker or
   a client started from a shell stopped at "Enter PEM pass phrase:" forever (and, without a
   terminal, failed with "[Errno 22] Invalid argument"). Now: a ConfigurationError at once
   that says the key is encrypted, for the broker and for etcd.
2. etcd's CA/certificate/key files that are readable but not PEM (or an encrypted key):
   gRPC only said "etcd connect failed: UNAVAILABLE ... Failed to create security
   handshaker", a plain StoreError naming no setting (and without a user, a transient one,
   retried for store_retry_s). README "Security": "certificate files that cannot be loaded"
   are refused at once with a TlsError naming the setting.
Run: .venv/bin/python -m pytest -q tests/attack/test_tls_key_files.py
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from droplet.cli.etcd_local import LocalEtcd, find_etcd_binary
from droplet.errors import ConfigurationError, StoreTlsError
from droplet.settings import Settings
from droplet.store.etcd import EtcdKV
from droplet.tls import client_context
from tests.secure_services import ETCD_PASSWORD, ETCD_USER, start_tls_etcd
from tests.tls_certs import TestCertificates, make_certificates

pytestmark = pytest.mark.timeout(90)

_ROOT = Path(__file__).resolve().parents[2]
_RETRY_S = 60.0  # store_retry_s of the refusal tests: a refusal taking half of it was retried


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def encrypted_key(certs: TestCertificates, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("enc") / "client-encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", certs.client_key, "-out", str(path), "-aes256",
                    "-passout", "pass:hunter2"], check=True, capture_output=True)
    assert b"ENCRYPTED" in path.read_bytes()
    return str(path)


def _run_in_a_terminal(code: str, timeout_s: float) -> tuple[str, bool]:
    """Runs `python -c code` with a controlling terminal (as from a shell); its output, and
    whether it finished within timeout_s (it is killed otherwise)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin/stdout/stderr and /dev/tty are the pty
        os.chdir(_ROOT)
        os.execv(sys.executable, [sys.executable, "-c", code])
    output = b""
    deadline = time.monotonic() + timeout_s
    finished = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    finished = True
                    break
                output += chunk
    finally:
        if not finished:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    return output.decode(errors="replace"), finished


def test_a_passphrase_protected_broker_key_is_refused_not_prompted_for(
    certs: TestCertificates, encrypted_key: str,
) -> None:
    code = (
        "from droplet.tls import client_context\n"
        "try:\n"
        f"    client_context('broker_ca_file', {certs.ca_file!r}, 'broker_cert_file', "
        f"{certs.client_cert!r}, 'broker_key_file', {encrypted_key!r})\n"
        "    print('LOADED')\n"
        "except Exception as exc:\n"
        "    print('REFUSED', type(exc).__name__, exc)\n"
    )
    # The child imports Droplet and loads a key: a second or two, more on a crowded host; a
    # build that prompts waits forever (and its prompt is in the output).
    output, finished = _run_in_a_terminal(code, timeout_s=45)
    assert "pass phrase" not in output.lower(), output
    assert finished, f"still waiting after 45 s: {output!r}"
    assert "REFUSED ConfigurationError" in output and "encrypted" in output, output
    assert "broker_key_file" in output, output


def test_an_encrypted_key_is_refused_with_its_setting_without_a_terminal(
    certs: TestCertificates, encrypted_key: str,
) -> None:
    with pytest.raises(ConfigurationError, match=r"broker_key_file .*encrypted"):
        client_context("broker_ca_file", certs.ca_file, "broker_cert_file", certs.client_cert,
                       "broker_key_file", encrypted_key)


@pytest.fixture(scope="module")
def secure_etcd(certs: TestCertificates, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LocalEtcd]:
    if find_etcd_binary() is None:
        pytest.skip("needs an etcd binary")
    etcd = start_tls_etcd(tmp_path_factory.mktemp("etcd"), certs)
    try:
        yield etcd
    finally:
        etcd.stop()


@pytest.mark.e2e
@pytest.mark.parametrize("user", [ETCD_USER, None], ids=["with-user", "no-user"])
@pytest.mark.parametrize("broken", ["ca-garbage", "cert-garbage", "key-garbage",
                                    "key-encrypted"])
def test_etcd_tls_files_that_cannot_be_loaded_are_named_at_once(
    secure_etcd: LocalEtcd, certs: TestCertificates, encrypted_key: str, tmp_path: Path,
    broken: str, user: str | None,
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    files = {"etcd_ca_file": certs.ca_file, "etcd_cert_file": certs.client_cert,
             "etcd_key_file": certs.client_key}
    setting = {"ca-garbage": "etcd_ca_file", "cert-garbage": "etcd_cert_file",
               "key-garbage": "etcd_key_file", "key-encrypted": "etcd_key_file"}[broken]
    files[setting] = encrypted_key if broken == "key-encrypted" else str(garbage)
    settings = Settings(etcd_endpoints=(secure_etcd.endpoint,), etcd_user=user,
                        etcd_password=ETCD_PASSWORD if user else None,
                        store_retry_s=_RETRY_S,
                        **files)
    started = time.monotonic()
    with pytest.raises(StoreTlsError) as refused:
        kv = EtcdKV(settings)
        try:
            kv.get("/attack/x")
        finally:
            kv.close()
    took = time.monotonic() - started
    message = str(refused.value)
    named = setting if broken != "cert-garbage" else "etcd_cert_file"
    assert named in message, message
    # Retried as if etcd were away, it takes store_retry_s (60 s); refused at once, well under
    # a second, or a few seconds on a crowded host: half of it is seconds of room either way.
    assert took < _RETRY_S / 2, f"refused after {took:.1f} s (retried as if etcd were away)"
    assert ETCD_PASSWORD not in message
