"""Keys and self-signed certificates made for one test, in its own folder.

Nothing secret is committed: each test makes its own RSA keys with ``cryptography`` and
writes them, with their certificates, under its ``tmp_path``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    """A signer: its private key and certificate, as files and as objects."""

    key_path: Path
    certificate_path: Path
    key_pem: bytes
    certificate: x509.Certificate


def make_identity(
    folder: Path,
    name: str,
    *,
    password: bytes | None = None,
    not_after: datetime.datetime | None = None,
    elliptic: bool = False,
) -> Identity:
    """Make ``<name>.key`` and ``<name>.pem`` in ``folder``: a key and its self-signed cert.

    ``elliptic`` makes an EC key, which the auth serializer refuses, as Celery does.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if elliptic:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "celeriac tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(not_after or now + 30 * DAY)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    key_path = folder / f"{name}.key"
    certificate_path = folder / f"{name}.pem"
    key_path.write_bytes(key_pem)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Identity(key_path, certificate_path, key_pem, certificate)


def make_store(folder: Path, *identities: Identity) -> Path:
    """A folder holding the certificates of ``identities``: a ``security_cert_store``."""
    folder.mkdir(parents=True, exist_ok=True)
    for identity in identities:
        target = folder / identity.certificate_path.name
        target.write_bytes(identity.certificate_path.read_bytes())
    return folder
