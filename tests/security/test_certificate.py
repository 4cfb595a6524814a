"""The auth signer: RSA keys and X.509 certificates, as Celery's auth serializer uses them."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

from celeriac.exceptions import ImproperlyConfigured, SecurityError
from celeriac.security.certificate import (
    CertificateSigner,
    certificate_id,
    load_certificate,
    load_certificate_store,
    load_private_key,
)
from celeriac.security.signer import SignatureError
from tests.security.credentials import Identity, make_identity, make_store

BODY = b'[[20, 22], {}, {"callbacks": null}]'


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certificates")


@pytest.fixture(scope="module")
def alice(folder: Path) -> Identity:
    return make_identity(folder, "alice")


@pytest.fixture(scope="module")
def mallory(folder: Path) -> Identity:
    return make_identity(folder, "mallory")


def signer_for(identity: Identity, *trusted: Identity, digest: str = "sha256") -> CertificateSigner:
    store = {certificate_id(other.certificate): other.certificate for other in trusted}
    return CertificateSigner(
        load_private_key(str(identity.key_path), None),
        load_certificate(str(identity.certificate_path)),
        store,
        digest,
    )


def test_signed_content_verifies_against_the_store(alice: Identity) -> None:
    signer = signer_for(alice, alice)

    payload = signer.sign("application/json", "utf-8", BODY)

    assert signer.verify(payload) == ("application/json", "utf-8", BODY)


def test_the_payload_is_celerys_base64_of_five_fields(alice: Identity) -> None:
    signer = signer_for(alice, alice)

    fields = base64.b64decode(signer.sign("application/json", "utf-8", BODY)).split(b"\x00\x01")

    assert base64.b64decode(fields[0]).decode() == signer.signer_id
    assert fields[2:] == [b"application/json", b"utf-8", BODY]


def test_the_signer_id_is_the_issuer_values_and_the_serial_number(alice: Identity) -> None:
    serial = alice.certificate.serial_number

    assert certificate_id(alice.certificate) == f"celeriac tests alice {serial}"


def test_an_altered_body_has_a_bad_signature(alice: Identity) -> None:
    signer = signer_for(alice, alice)
    fields = base64.b64decode(signer.sign("application/json", "utf-8", BODY))
    altered = base64.b64encode(fields.replace(b"[20, 22]", b"[20, 99]"))

    with pytest.raises(SignatureError, match="bad signature by certificate 'celeriac tests alice"):
        signer.verify(altered)


def test_a_certificate_outside_the_store_is_an_unknown_signer(
    alice: Identity, mallory: Identity
) -> None:
    payload = signer_for(mallory, mallory).sign("application/json", "utf-8", BODY)

    with pytest.raises(SignatureError, match="unknown certificate 'celeriac tests mallory"):
        signer_for(alice, alice).verify(payload)


def test_a_signature_by_another_key_under_a_trusted_id_is_bad(
    alice: Identity, mallory: Identity
) -> None:
    forger = signer_for(mallory, mallory)
    forger.signer_id = certificate_id(alice.certificate)

    with pytest.raises(SignatureError, match="bad signature"):
        signer_for(alice, alice).verify(forger.sign("application/json", "utf-8", BODY))


@pytest.mark.parametrize("payload", [b"", b"not base64!", base64.b64encode(b"one field")])
def test_what_is_not_an_auth_payload_is_refused(alice: Identity, payload: bytes) -> None:
    with pytest.raises(SignatureError, match="not an auth-signed payload"):
        signer_for(alice, alice).verify(payload)


def test_a_certificate_that_expired_since_loading_no_longer_verifies(alice: Identity) -> None:
    signer = signer_for(alice, alice)
    payload = signer.sign("application/json", "utf-8", BODY)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)
    checker = CertificateSigner(
        load_private_key(str(alice.key_path), None),
        alice.certificate,
        {signer.signer_id: alice.certificate},
        now=lambda: later,
    )

    with pytest.raises(SignatureError, match="not valid now"):
        checker.verify(payload)


def test_the_store_reads_a_folder_or_a_glob(folder: Path, alice: Identity) -> None:
    store = make_store(folder / "store", alice)

    by_folder = load_certificate_store(str(store))
    by_glob = load_certificate_store(str(store / "*.pem"))

    assert list(by_folder) == list(by_glob) == [certificate_id(alice.certificate)]


def test_an_empty_store_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="holds no certificate"):
        load_certificate_store(str(tmp_path))


def test_a_store_with_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    old = make_identity(tmp_path, "old", not_after=soon)
    later = soon + datetime.timedelta(hours=1)

    with pytest.raises(SecurityError, match=r"'celeriac tests old \d+' in .* has expired"):
        load_certificate_store(str(old.certificate_path), now=lambda: later)


def test_a_key_with_a_password_needs_it(tmp_path: Path) -> None:
    locked = make_identity(tmp_path, "locked", password=b"open sesame")

    assert load_private_key(str(locked.key_path), "open sesame").key_size == 2048
    with pytest.raises(SecurityError, match="cannot load the private key") as refused:
        load_private_key(str(locked.key_path), b"wrong")
    assert "open sesame" not in str(refused.value)
    assert locked.key_pem.decode() not in str(refused.value)


def test_keys_and_certificates_that_are_not_rsa_are_refused(tmp_path: Path) -> None:
    elliptic = make_identity(tmp_path, "elliptic", elliptic=True)

    with pytest.raises(SecurityError, match="not an RSA key"):
        load_private_key(str(elliptic.key_path), None)
    with pytest.raises(SecurityError, match="no RSA key"):
        load_certificate(str(elliptic.certificate_path))


def test_a_key_that_is_not_the_certificates_is_refused(alice: Identity, mallory: Identity) -> None:
    with pytest.raises(ImproperlyConfigured, match="not the private key of security_certificate"):
        CertificateSigner(load_private_key(str(mallory.key_path), None), alice.certificate, {})


def test_a_missing_file_names_its_setting(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="security_key: cannot read"):
        load_private_key(str(tmp_path / "nowhere.key"), None)


@pytest.mark.parametrize("digest", ["sha999", "shake128"])
def test_a_digest_that_cannot_sign_is_refused(alice: Identity, digest: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"security_digest '{digest}'"):
        signer_for(alice, alice, digest=digest)
