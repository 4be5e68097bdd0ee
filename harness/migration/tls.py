"""TLS for migration: credentials generated at test time, QEMU objects, parameters.

A scenario declares what it wants (options=PrecopyOptions(tls=Psk(...)) or X509(...));
ScenarioContext materialises it into the test's own directory: the credential
files, the `-object tls-creds-*` arguments for each side and the tls-creds /
tls-hostname migration parameters. Negative cases (wrong key, unknown CA,
hostname mismatch, hostile client) are the same declaration with one knob
turned, so the positive and negative runs differ in exactly one thing.

Keys and certificates are made with `cryptography` (already a paramiko
dependency): no openssl/certtool subprocess, nothing to install.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.qemu.cmdline import qemu_opt

CREDS_ID = "tlscreds0"
DST_ADDRESS = "@dst"   # in X509.server_names: the address the destination listens on
PSK_USER = "qemu"


@dataclass(frozen=True)
class Setup:
    """What a scenario option adds to the pair: argv and migration parameters."""

    src_args: tuple[str, ...] = ()
    dst_args: tuple[str, ...] = ()
    src_params: dict = field(default_factory=dict)
    dst_params: dict = field(default_factory=dict)
    files: tuple[str, ...] = ()

    def __add__(self, other: "Setup") -> "Setup":
        return Setup(self.src_args + other.src_args, self.dst_args + other.dst_args,
                     {**self.src_params, **other.src_params},
                     {**self.dst_params, **other.dst_params}, self.files + other.files)


@dataclass(frozen=True)
class Psk:
    """Pre-shared key. mismatch: the destination holds a different key for the user."""

    mismatch: bool = False

    def materialize(self, workdir: Path, dst_address: str = "127.0.0.1") -> Setup:
        src_dir, dst_dir = workdir / "psk-src", workdir / "psk-dst"
        key = os.urandom(32).hex()
        dst_key = os.urandom(32).hex() if self.mismatch else key
        _write(src_dir / "keys.psk", f"{PSK_USER}:{key}\n", 0o600)
        _write(dst_dir / "keys.psk", f"{PSK_USER}:{dst_key}\n", 0o600)
        return Setup(
            src_args=("-object", f"tls-creds-psk,id={CREDS_ID},endpoint=client,"
                                 f"dir={qemu_opt(src_dir)},username={PSK_USER}"),
            dst_args=("-object", f"tls-creds-psk,id={CREDS_ID},endpoint=server,dir={qemu_opt(dst_dir)}"),
            src_params={"tls-creds": CREDS_ID}, dst_params={"tls-creds": CREDS_ID},
            files=(str(src_dir / "keys.psk"), str(dst_dir / "keys.psk")))


@dataclass(frozen=True)
class X509:
    """x509 certificates from a CA made for this test ("ca"), and an unrelated one.

    server_names: subject alternative names of the destination's (server) cert.
    tls_hostname: the source's tls-hostname parameter (None: QEMU uses the URI host).
    src_trusts: the CAs in the source's (client's) ca-cert.pem bundle. QEMU checks
        its own certificate against that bundle when the object is created, so a
        client certificate by "other-ca" needs "other-ca" in it.
    client_cert_by: issuer of the source's client certificate: "ca", "other-ca"
        (a hostile client the server must reject) or None (anonymous client).
    verify_peer: the destination demands and verifies a client certificate.
    """

    server_names: tuple[str, ...] = (DST_ADDRESS, "localhost")
    tls_hostname: str | None = None
    src_trusts: tuple[str, ...] = ("ca",)
    client_cert_by: str | None = "ca"
    verify_peer: bool = True

    def __post_init__(self):
        cas = ("ca", "other-ca")
        if not self.src_trusts or set(self.src_trusts) - set(cas):
            raise ValueError(f"X509.src_trusts must name CAs from {cas}, not {self.src_trusts!r}")
        if self.client_cert_by not in (*cas, None):
            raise ValueError(f"X509.client_cert_by must be one of {cas} or None")

    def materialize(self, workdir: Path, dst_address: str = "127.0.0.1") -> Setup:
        names = tuple(dst_address if n == DST_ADDRESS else n for n in self.server_names)
        cas = {"ca": _Authority.new("qmh test CA"), "other-ca": _Authority.new("qmh unrelated CA")}
        src_dir, dst_dir = workdir / "x509-src", workdir / "x509-dst"
        # Destination = TLS server: the CA it verifies clients with, and its own cert.
        _write(dst_dir / "ca-cert.pem", cas["ca"].cert_pem(), 0o644)
        skey, scert = cas["ca"].issue("qemu migration destination", names, server=True)
        _write(dst_dir / "server-key.pem", skey, 0o600)
        _write(dst_dir / "server-cert.pem", scert, 0o644)
        # Source = TLS client: the CA bundle it trusts and (maybe) its own cert.
        _write(src_dir / "ca-cert.pem", b"".join(cas[c].cert_pem() for c in self.src_trusts), 0o644)
        if self.client_cert_by is not None:
            ckey, ccert = cas[self.client_cert_by].issue("qemu migration source", (), server=False)
            _write(src_dir / "client-key.pem", ckey, 0o600)
            _write(src_dir / "client-cert.pem", ccert, 0o644)
        verify = "on" if self.verify_peer else "off"
        src_params = {"tls-creds": CREDS_ID}
        if self.tls_hostname is not None:
            src_params["tls-hostname"] = self.tls_hostname
        return Setup(
            src_args=("-object", f"tls-creds-x509,id={CREDS_ID},endpoint=client,dir={qemu_opt(src_dir)}"),
            dst_args=("-object", f"tls-creds-x509,id={CREDS_ID},endpoint=server,dir={qemu_opt(dst_dir)},"
                                 f"verify-peer={verify}"),
            src_params=src_params, dst_params={"tls-creds": CREDS_ID},
            files=tuple(sorted(str(p) for d in (src_dir, dst_dir) for p in d.iterdir())))


# ---------------------------------------------------------------------------- x509 helpers

def _write(path: Path, text: str | bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass
class _Authority:
    key: object
    cert: object

    @classmethod
    def new(cls, cn: str) -> "_Authority":
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (_builder(name, name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                             crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def cert_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, names: tuple[str, ...], *, server: bool) -> tuple[bytes, bytes]:
        """(key PEM, cert PEM) for a TLS server or client, signed by this authority."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        b = (_builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
                      self.cert.subject, key.public_key())
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                          key_cert_sign=False, crl_sign=False,
                                          content_commitment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 self.key.public_key()), critical=False))
        if names:
            b = b.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                                critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject, issuer, public_key):
    """A certificate valid from an hour ago for two days (clock skew; one test run)."""
    from cryptography import x509
    now = _now()
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2)))


def _general_name(n: str):
    from cryptography import x509
    try:
        return x509.IPAddress(ipaddress.ip_address(n))
    except ValueError:
        return x509.DNSName(n)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
