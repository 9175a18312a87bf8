"""Throw-away certificates for the TLS tests, made with the `cryptography` package.

One CA signs a server certificate for 127.0.0.1 and localhost, a client certificate and an
expired server certificate; a second, unrelated CA is the "wrong CA" a misconfigured client
trusts. EC P-256 keys: quick to make, and every party (Erlang's ssl, Python's ssl, gRPC)
accepts them.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class TestCertificates:
    """Paths of PEM files (keys unencrypted)."""

    __test__ = False  # not a pytest test class

    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    wrong_ca_file: str  # a CA that signed none of the above
    expired_server_cert: str  # signed by ca_file, valid for 127.0.0.1, but expired
    expired_server_key: str


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Droplet tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _ca(common_name: str, now: datetime.datetime) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 2 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issued(cert, key)


def _leaf(
    ca: _Issued, common_name: str, *, server: bool, not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost"),
            ]),
            critical=False,
        )
    return _Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _write(directory: Path, stem: str, issued: _Issued) -> tuple[str, str]:
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def make_certificates(directory: Path) -> TestCertificates:
    """Writes the CA, server, client, wrong-CA and expired-server files into directory."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca = _ca("droplet-test-ca", now)
    wrong = _ca("droplet-wrong-ca", now)
    valid = {"not_before": now - _DAY, "not_after": now + 2 * _DAY}
    server = _leaf(ca, "127.0.0.1", server=True, **valid)
    client = _leaf(ca, "droplet-test-client", server=False, **valid)
    expired = _leaf(ca, "127.0.0.1", server=True, not_before=now - 10 * _DAY,
                    not_after=now - 2 * _DAY)
    ca_file, _ = _write(directory, "ca", ca)
    wrong_ca_file, _ = _write(directory, "wrong-ca", wrong)
    server_cert, server_key = _write(directory, "server", server)
    client_cert, client_key = _write(directory, "client", client)
    expired_cert, expired_key = _write(directory, "expired-server", expired)
    return TestCertificates(
        ca_file=ca_file, server_cert=server_cert, server_key=server_key,
        client_cert=client_cert, client_key=client_key, wrong_ca_file=wrong_ca_file,
        expired_server_cert=expired_cert, expired_server_key=expired_key,
    )
