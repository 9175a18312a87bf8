"""TLS towards RabbitMQ and etcd: the client's context from the settings, and failures
explained.

A TLS failure is not a network blip: waiting does not fix a CA that did not sign the server's
certificate, an expired certificate, or a plaintext client at a TLS-only port. So the broker
and store modules ask `explain_failure` whether a failed connection is one of those; when it
is, they raise a `TlsError` at once (no retry loop) whose message says what is wrong and which
setting fixes it. pika and gRPC hand ssl's errors on only as text, hence the matching on text.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from droplet.errors import (
    ConfigurationError,
    StoreCredentialsError,
    StoreError,
    StoreTlsError,
)
from droplet.settings import Settings

_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Peer:
    """Who a connection went to, and the settings that configure TLS towards it."""

    service: str  # "RabbitMQ" or "etcd"
    address: str  # host:port
    tls: bool  # this client spoke TLS
    ca_setting: str
    ca_file: str | None
    cert_setting: str
    cert_file: str | None
    key_setting: str
    plaintext_fix: str  # what a plaintext client at a TLS-only port should change

    @property
    def who(self) -> str:
        return f"{self.service} at {self.address}"


def broker_peer(settings: Settings, address: str, tls: bool) -> Peer:
    return Peer(
        service="RabbitMQ", address=address, tls=tls,
        ca_setting="broker_ca_file", ca_file=settings.broker_ca_file,
        cert_setting="broker_cert_file", cert_file=settings.broker_cert_file,
        key_setting="broker_key_file",
        plaintext_fix=f"use an amqps:// broker_url ({env_name('broker_url')}) and set "
                      f"{_named('broker_ca_file')} to the CA of its certificate",
    )


def etcd_peer(settings: Settings, address: str) -> Peer:
    return Peer(
        service="etcd", address=address, tls=etcd_uses_tls(settings),
        ca_setting="etcd_ca_file", ca_file=settings.etcd_ca_file,
        cert_setting="etcd_cert_file", cert_file=settings.etcd_cert_file,
        key_setting="etcd_key_file",
        plaintext_fix=f"set {_named('etcd_ca_file')} to the CA of its certificate",
    )


def etcd_uses_tls(settings: Settings) -> bool:
    """etcd is reached over TLS as soon as any of its TLS files is set."""
    return bool(settings.etcd_ca_file or settings.etcd_cert_file or settings.etcd_key_file)


def env_name(setting: str) -> str:
    return f"DROPLET_{setting.upper()}"


def _named(setting: str) -> str:
    return f"{setting} ({env_name(setting)})"


def client_context(
    ca_setting: str, ca_file: str | None, cert_setting: str, cert_file: str | None,
    key_setting: str, key_file: str | None,
) -> ssl.SSLContext:
    """A context verifying the server against ca_file (the system's CAs when None) and
    presenting cert_file/key_file when set. Unreadable files raise ConfigurationError."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot load {_named(ca_setting)} {ca_file!r}: {exc}; it must name a PEM file "
            "of the CA that signed the server's certificate") from None
    if key_file and not cert_file:
        raise ConfigurationError(f"{key_setting} is set but {cert_setting} is not: set both "
                                 "(the client certificate and its key) or neither")
    if cert_file:
        try:
            # A password callback, so that OpenSSL never asks for one on the terminal (a
            # worker started from a shell would wait there forever).
            context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
        except _EncryptedKey:
            raise ConfigurationError(
                f"{_named(key_setting)} {key_file or cert_file!r} is an encrypted key (it "
                "asks for a passphrase, and nothing here can type one): give it an "
                "unencrypted key, e.g. `openssl pkey -in KEY -out KEY.plain` (mode 0600)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot load the client certificate {_named(cert_setting)} {cert_file!r} "
                f"with {_named(key_setting)} {key_file!r}: {exc}; they must name PEM files "
                "of a certificate and its unencrypted key") from None
    return context


class _EncryptedKey(Exception):
    """Raised by _no_passphrase: the key file is encrypted."""


def _no_passphrase() -> bytes:
    raise _EncryptedKey


def check_etcd_files(settings: Settings) -> ssl.SSLContext:
    """Loads etcd's TLS files as PEM now: gRPC takes any bytes and fails each connection
    later with "Failed to create security handshaker", naming no file (and retried as if
    etcd were away). Raises StoreTlsError naming the setting. The context it returns is the
    lean KV client's (store/etcd_lean.py), offering HTTP/2 as gRPC needs."""
    try:
        context = client_context(
            "etcd_ca_file", settings.etcd_ca_file, "etcd_cert_file", settings.etcd_cert_file,
            "etcd_key_file", settings.etcd_key_file)
    except ConfigurationError as exc:
        raise StoreTlsError(str(exc)) from None
    context.set_alpn_protocols(["h2"])
    return context


_EXPIRED = ("certificate has expired", "certificate is not yet valid")
_OTHER_HOST = ("hostname mismatch", "ip address mismatch", "doesn't match",
               "hostname verification check failed", "is not in peer certificate")  # gRPC
_UNTRUSTED = ("certificate_verify_failed", "certificate verify failed")
_REFUSED_US = ("alert handshake failure", "alert certificate required", "alert bad certificate",
               "alert unknown ca", "alert certificate unknown", "alert certificate expired",
               "alert access denied")
# The server hung up in the handshake without saying why: a refusal of our certificate when
# it speaks TLS, or a port that accepts and closes (a proxy whose backend is down).
_HUNG_UP = ("eof occurred in violation of protocol",)
_NOT_TLS = ("wrong version number", "record layer failure", "packet length too long",
            "unknown protocol", "http request", "wrong_version_number")
_CONNECTION_CUT = ("connection reset", "stream connection lost", "socket closed",
                   "connection lost", "eof")


def explain_failure(detail: str, peer: Peer) -> str | None:
    """What a failed connection means when it is a TLS matter, with the fix; None when it is
    not (a refused or unreachable port, an authentication error...). For a plaintext client
    whose connection was cut it probes the port for TLS (a connection of its own)."""
    text = detail.lower()
    if peer.tls:
        return _explain_tls(text, peer)
    if any(marker in text for marker in _CONNECTION_CUT) and speaks_tls(peer.address):
        return (f"{peer.who} accepts only TLS, and this client connected without it: "
                f"{peer.plaintext_fix}")
    return None


def _explain_tls(text: str, peer: Peer) -> str | None:
    if any(marker in text for marker in _EXPIRED):
        return (f"{peer.who} presented a certificate that has expired (or is not valid yet): "
                "the server needs a renewed certificate (or this machine's clock is wrong); "
                "no client setting fixes this")
    if any(marker in text for marker in _OTHER_HOST):
        return (f"{peer.who} presented a certificate issued for another host: connect by a "
                "name or address listed in its subjectAltName, or give the server a "
                "certificate for this address")
    if any(marker in text for marker in _UNTRUSTED):
        trusted = (f"{peer.ca_setting}={peer.ca_file!r}" if peer.ca_file
                   else f"{peer.ca_setting} is not set, so only the system's CAs")
        return (f"{peer.who} presented a certificate not signed by a CA this client trusts "
                f"({trusted}): set {_named(peer.ca_setting)} to the PEM file of the CA that "
                "signed the server's certificate")
    refused_us = any(marker in text for marker in _REFUSED_US)
    if refused_us or (any(marker in text for marker in _HUNG_UP) and speaks_tls(peer.address)):
        ours = (f"{peer.cert_setting}={peer.cert_file!r}" if peer.cert_file
                else f"{peer.cert_setting} is not set")
        return (f"{peer.who} refused this client during the TLS handshake ({ours}): it "
                "wants a client certificate signed by a CA it trusts: set "
                f"{_named(peer.cert_setting)} and {_named(peer.key_setting)}")
    if any(marker in text for marker in _NOT_TLS):
        return (f"{peer.who} does not answer with TLS: point the client at the server's TLS "
                "port, or connect without TLS")
    return None


def etcd_refusal(settings: Settings, detail: str, probe: bool) -> StoreError | None:
    """A failure no retry fixes (a refused user, a TLS mismatch) as the error to raise at
    once, naming the setting to change; None for anything else. A plaintext client probes
    the endpoints for TLS only when `probe`."""
    text = detail.lower()
    endpoints = ",".join(settings.etcd_endpoints)
    if "authentication failed" in text or "invalid user id or password" in text:
        return StoreCredentialsError(
            f"etcd at {endpoints} refused user {settings.etcd_user!r}: check etcd_user and "
            f"etcd_password (DROPLET_ETCD_USER, DROPLET_ETCD_PASSWORD) [{detail}]")
    if "user name is empty" in text:
        return StoreCredentialsError(
            f"etcd at {endpoints} has authentication on and no user is configured: set "
            f"etcd_user and etcd_password (DROPLET_ETCD_USER, DROPLET_ETCD_PASSWORD) [{detail}]")
    if etcd_uses_tls(settings):
        addresses = [endpoints]
    else:
        addresses = list(settings.etcd_endpoints) if probe else []
    for address in addresses:
        explained = explain_failure(detail, etcd_peer(settings, address))
        if explained is not None:
            return StoreTlsError(f"{explained} [{detail}]")
    # A plaintext etcd closes the connection at a TLS hello, which gRPC words like a member
    # going away ("Handshake read failed (Socket closed)"): ask the port itself.
    if etcd_uses_tls(settings) and probe and any(m in text for m in _CLOSED_AT_HELLO):
        for address in settings.etcd_endpoints:
            if closes_at_tls_hello(address):
                return StoreTlsError(
                    f"etcd at {address} does not answer with TLS (it closes the connection at "
                    "the TLS hello): point etcd_endpoints at its TLS port, or unset "
                    f"{_named('etcd_ca_file')} to connect without TLS [{detail}]")
    return None


_CLOSED_AT_HELLO = ("handshake read failed", "socket closed")


def _tls_hello(address: str, timeout_s: float) -> str:
    """What host:port does with a TLS hello (certificates unchecked): "none" (nothing
    listens, or not a host:port), "handshake", "alert" (a TLS server refusing us), "garbled"
    (an answer that is not TLS), "silent" (no answer in time) or "reset" (closed at the
    hello)."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return "none"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        raw = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
    except OSError:
        return "none"
    try:
        with raw, context.wrap_socket(raw) as tls:
            tls.do_handshake()
        return "handshake"
    except ssl.SSLError as exc:
        return "alert" if "alert" in str(exc).lower() else "garbled"
    except TimeoutError:
        return "silent"
    except OSError:
        return "reset"


def closes_at_tls_hello(address: str, timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
    """True when host:port takes a connection but not TLS: it closes the connection at the
    hello, or answers it without TLS. False when nothing listens or nothing answers (a member
    that died or hangs), or when it speaks TLS."""
    return _tls_hello(address, timeout_s) in ("garbled", "reset")


def speaks_tls(address: str, timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
    """True when host:port answers a TLS hello (a handshake, or a TLS alert refusing us)."""
    return _tls_hello(address, timeout_s) in ("handshake", "alert")
