"""The hmac signer: what it signs verifies, and nothing else does."""

from __future__ import annotations

import secrets

import pytest

from celeriac.exceptions import DecodeError, ImproperlyConfigured, SecurityError
from celeriac.security.shared_secret import SharedSecretSigner, key_id
from celeriac.security.signer import SignatureError

SECRET = secrets.token_bytes(32)
BODY = b'[[20, 22], {}, {"callbacks": null}]'


def test_signed_content_verifies_back_into_its_type_encoding_and_bytes() -> None:
    signer = SharedSecretSigner(SECRET)

    payload = signer.sign("application/json", "utf-8", BODY)

    assert signer.verify(payload) == ("application/json", "utf-8", BODY)
    assert SharedSecretSigner(SECRET).verify(payload) == ("application/json", "utf-8", BODY)


def test_a_signature_error_is_both_a_security_and_a_decode_error() -> None:
    assert issubclass(SignatureError, SecurityError)
    assert issubclass(SignatureError, DecodeError)


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"[20, 22]", b"[20, 99]"), (b"application/json", b"application/x-yaml")],
    ids=["body", "content-type"],
)
def test_an_altered_payload_has_a_bad_signature(old: bytes, new: bytes) -> None:
    signer = SharedSecretSigner(SECRET)
    payload = signer.sign("application/json", "utf-8", BODY)

    with pytest.raises(SignatureError, match="bad signature"):
        signer.verify(payload.replace(old, new))


def test_a_payload_signed_with_another_secret_names_the_unknown_key_id() -> None:
    stranger = SharedSecretSigner(secrets.token_bytes(32))
    payload = stranger.sign("application/json", "utf-8", BODY)

    with pytest.raises(SignatureError, match=f"unknown key \\(key id '{stranger.key_id}'\\)"):
        SharedSecretSigner(SECRET).verify(payload)


def test_a_forged_payload_reusing_the_key_id_has_a_bad_signature() -> None:
    signer = SharedSecretSigner(SECRET)
    forger = SharedSecretSigner(secrets.token_bytes(32))
    forger.key_id = signer.key_id

    with pytest.raises(SignatureError, match="bad signature"):
        signer.verify(forger.sign("application/json", "utf-8", BODY))


@pytest.mark.parametrize("payload", [b"", b"[1, 2]", b"celeriac-hmac-1\nabc"])
def test_what_is_not_an_hmac_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(SignatureError, match="not an hmac-signed payload"):
        SharedSecretSigner(SECRET).verify(payload)


def test_a_mac_that_is_not_base64_is_refused() -> None:
    signer = SharedSecretSigner(SECRET)
    fields = [b"celeriac-hmac-1", signer.key_id.encode(), b"application/json", b"utf-8"]

    with pytest.raises(SignatureError, match="not base64"):
        signer.verify(b"\n".join([*fields, b"!!!", BODY]))


def test_the_key_id_is_stable_and_says_nothing_of_the_secret() -> None:
    identifier = key_id(SECRET)

    assert identifier == key_id(SECRET) != key_id(secrets.token_bytes(32))
    assert len(identifier) == 16
    assert SECRET.hex()[:16] != identifier
    assert SECRET.hex() not in repr(SharedSecretSigner(SECRET))


def test_no_error_text_holds_the_secret() -> None:
    signer = SharedSecretSigner(SECRET)
    stranger = SharedSecretSigner(secrets.token_bytes(32))
    payload = stranger.sign("application/json", "utf-8", BODY)

    with pytest.raises(SignatureError) as refused:
        signer.verify(payload)

    for secret in (SECRET, stranger._secret):
        assert secret.hex() not in str(refused.value)
        assert repr(secret) not in str(refused.value)


def test_a_short_secret_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"at least 32 random bytes.*token_hex"):
        SharedSecretSigner(b"hunter2")


def test_an_unknown_digest_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="security_digest 'sha999'"):
        SharedSecretSigner(SECRET, "sha999")


def test_another_digest_signs_and_verifies() -> None:
    signer = SharedSecretSigner(SECRET, "sha512")

    payload = signer.sign("application/json", "utf-8", BODY)

    assert signer.verify(payload)[2] == BODY
    with pytest.raises(SignatureError, match="bad signature"):
        SharedSecretSigner(SECRET).verify(payload)
