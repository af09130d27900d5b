"""The client's AES envelope: a known answer computed outside this code, and round trips."""

from __future__ import annotations

import base64
import hashlib
import json
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from services import crypto
from services.crypto import (
    DecryptError,
    aes_key,
    compact_json,
    decrypt_body,
    encrypt_body,
    encrypt_text,
)
from services.redact import remember

SECRET = "sandbox-client-secret"
BODY = {"companyId": "CEK1PU9AOO", "loadAmount": Decimal("1500.50")}
# Computed once with OpenSSL, independently of this code:
#   KEY=$(printf %s sandbox-client-secret | openssl dgst -sha256 -binary | head -c 16 | xxd -p)
#   printf %s '{"companyId":"CEK1PU9AOO","loadAmount":1500.50}' \
#     | openssl enc -aes-128-ecb -K $KEY -base64 -A
KNOWN_KEY_HEX = "eecd853fdf8365ff8842f675843b07ef"
KNOWN_CIPHERTEXT = "oaaDnmrd4nWrK/DRGt1d21+K3ZHAVD6i37W2TkgFu7iNRsA1uEUshLPHI+QyzD/7"
# Exactly one block of plaintext: PKCS7 then adds a whole block of 0x10 bytes.
KNOWN_BLOCK_CIPHERTEXT = "4PBHXH/5kDxA+tfWeQ+49v18qfoz6jlKCeqZKtNtgM4="


def _manual_ecb(plaintext: bytes, key: bytes) -> str:
    """AES-ECB with PKCS7 padding built by hand from the raw block cipher."""
    pad = 16 - len(plaintext) % 16
    padded = plaintext + bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 (test vector)
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def test_key_is_first_16_bytes_of_sha256_of_the_secret():
    assert aes_key(SECRET).hex() == KNOWN_KEY_HEX
    assert aes_key(SECRET) == hashlib.sha256(SECRET.encode()).digest()[:16]


def test_encrypt_body_matches_the_openssl_known_answer():
    assert encrypt_body(BODY, SECRET) == {"request": KNOWN_CIPHERTEXT}
    plaintext = b'{"companyId":"CEK1PU9AOO","loadAmount":1500.50}'
    assert _manual_ecb(plaintext, bytes.fromhex(KNOWN_KEY_HEX)) == KNOWN_CIPHERTEXT


def test_a_whole_block_gets_a_full_padding_block():
    assert encrypt_text("YELLOW SUBMARINE", SECRET) == KNOWN_BLOCK_CIPHERTEXT
    assert len(base64.b64decode(KNOWN_BLOCK_CIPHERTEXT)) == 32


def test_decrypt_body_reads_the_known_answer_with_exact_amounts():
    body = decrypt_body({"request": KNOWN_CIPHERTEXT}, SECRET)
    assert body == {"companyId": "CEK1PU9AOO", "loadAmount": Decimal("1500.50")}
    assert isinstance(body["loadAmount"], Decimal)


@pytest.mark.parametrize(
    "envelope",
    [
        {"request": KNOWN_CIPHERTEXT},  # wrong key (see the secret below)
        {"request": "not base64 !"},
        {"request": base64.b64encode(b"short").decode()},
        {"request": ""},
        {"response": KNOWN_CIPHERTEXT},
        {"request": 12},
    ],
)
def test_decrypt_refuses_what_does_not_decrypt(envelope):
    with pytest.raises(DecryptError):
        decrypt_body(envelope, "another-secret")


def test_decrypt_refuses_a_plaintext_that_is_not_an_object():
    with pytest.raises(DecryptError, match="not a JSON object"):
        decrypt_body({"request": encrypt_text("[1, 2]", SECRET)}, SECRET)


def test_decrypt_refuses_a_plaintext_nested_too_deep_to_read():
    # json.loads raises RecursionError here, which no caller expects from a reply.
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(DecryptError, match="not JSON"):
        decrypt_body({"request": encrypt_text(deep, SECRET)}, SECRET)


@pytest.mark.parametrize(
    "plaintext",
    [
        '{"code":1,"code":0,"payload":{}}',
        '{"code":0,"payload":{"pgReferenceNumber":"A","pgReferenceNumber":"B"}}',
    ],
)
def test_decrypt_refuses_a_plaintext_that_repeats_a_key(plaintext):
    # json.loads keeps the last of two equal keys: a refusal could read as a success.
    with pytest.raises(DecryptError, match="repeats the key"):
        decrypt_body({"request": encrypt_text(plaintext, SECRET)}, SECRET)


def test_read_json_names_a_repeated_key_without_echoing_a_secret():
    remember("a-remembered-secret-value")
    with pytest.raises(ValueError, match="repeats the key") as caught:
        crypto.read_json('{"a-remembered-secret-value":1,"a-remembered-secret-value":2}')
    assert "a-remembered" not in str(caught.value)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0.10"), "0.10"),
        (Decimal("0.1"), "0.10"),
        (Decimal("1500.5"), "1500.50"),
        (Decimal("1500"), "1500.00"),
        (Decimal("1E+3"), "1000.00"),
        (Decimal("999999999.99"), "999999999.99"),
    ],
)
def test_compact_json_writes_decimals_as_exact_numbers(amount, text):
    written = compact_json({"loadAmount": amount, "note": "ü"})
    assert written == f'{{"loadAmount":{text},"note":"ü"}}'
    assert json.loads(written, parse_float=Decimal)["loadAmount"] == amount


def test_compact_json_refuses_floats_and_nan():
    with pytest.raises(TypeError):
        compact_json({"loadAmount": 0.1})
    with pytest.raises(ValueError):
        compact_json({"loadAmount": Decimal("NaN")})


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.text(max_size=40)
    | st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=12), _json_values, max_size=6), st.text(min_size=1))
def test_round_trip_returns_the_same_body(body, secret):
    envelope = encrypt_body(body, secret)
    assert set(envelope) == {"request"}
    assert base64.b64decode(envelope["request"], validate=True)
    assert decrypt_body(envelope, secret) == json.loads(compact_json(body), parse_float=Decimal)
    assert decrypt_body(envelope, secret) == body
