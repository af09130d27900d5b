"""The client's AES payload envelope for EnKash, the exact JSON the client puts on the wire, and
the one strict reader of the JSON EnKash sends back (``read_json``).

EnKash asks partners to send ``{"request": "<base64>"}`` where the base64 is AES-128 in ECB mode
with PKCS7 (PKCS5) padding over the compact JSON body, keyed with the first 16 bytes of SHA-256 of
the client secret (UTF-8); replies come back the same way (see ENKASH_API.md, "Payload
encryption").

ECB is weak cryptography: equal 16-byte blocks give equal ciphertext blocks and nothing is
authenticated. It is used here only because the peer requires it, and only over TLS, which is what
actually protects the traffic. This module deliberately shares no code with the sandbox's own
implementation, so a mistake in one cannot hide in the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from services.redact import redact

_BLOCK_BITS = 128
_CENT = Decimal("0.01")


class DecryptError(ValueError):
    """A reply that does not decrypt to a JSON object with this client secret."""


def aes_key(client_secret: str) -> bytes:
    """The AES-128 key: the first 16 bytes of SHA-256 of the client secret (UTF-8)."""
    return hashlib.sha256(client_secret.encode("utf-8")).digest()[:16]


def _cipher(client_secret: str) -> Cipher:
    # ECB only because EnKash requires it (see the module docstring); never for anything else.
    return Cipher(algorithms.AES(aes_key(client_secret)), modes.ECB())  # noqa: S305


def compact_json(value: Any) -> str:
    """Compact JSON (no spaces) in which a ``Decimal`` is written as an exact JSON number.

    ``json.dumps`` can only write a Decimal via ``float``, which turns ``Decimal("0.10")`` into a
    binary fraction; money must go out exactly as typed, so amounts are written as their decimal
    text, always with two places (``1500.50``, ``0.10``, ``25.00``).
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("a non-finite amount cannot be sent")
        # Points carry at most 2 decimals; quantize rather than let an exponent form ("1E+3") out.
        return format(value.quantize(_CENT), "f")
    if isinstance(value, dict):
        items = (f"{_encode(str(key))}:{compact_json(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(compact_json(item) for item in value) + "]"
    if isinstance(value, float):
        raise TypeError("floats are not sent to EnKash; use Decimal for amounts")
    # str, int, bool, None: the standard encoder is exact for these.
    return _encode(value)


# What ``json.dumps(value, ensure_ascii=False, allow_nan=False)`` writes, without building a new
# encoder for every value (dumps does whenever an option differs from its defaults).
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def encrypt_text(plaintext: str, client_secret: str) -> str:
    """Base64 (standard alphabet, padded) of AES-128-ECB over PKCS7-padded UTF-8 ``plaintext``."""
    padder = padding.PKCS7(_BLOCK_BITS).padder()
    padded = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    encryptor = _cipher(client_secret).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def decrypt_text(ciphertext: str, client_secret: str) -> str:
    """Inverse of ``encrypt_text``; ``DecryptError`` for anything that does not decrypt cleanly."""
    try:
        raw = base64.b64decode(ciphertext.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise DecryptError("the encrypted reply is not base64") from exc
    if not raw or len(raw) % (_BLOCK_BITS // 8):
        raise DecryptError("the encrypted reply is not a whole number of AES blocks")
    decryptor = _cipher(client_secret).decryptor()
    padded = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(_BLOCK_BITS).unpadder()
    try:
        return (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecryptError("the encrypted reply does not decrypt with this client secret") from exc


def encrypt_body(body: dict, client_secret: str) -> dict:
    """``{"request": "<base64>"}`` carrying ``body`` serialised by ``compact_json``."""
    return {"request": encrypt_text(compact_json(body), client_secret)}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class DuplicateKey(ValueError):
    """A JSON object that names the same key twice: which value counts is anyone's guess."""

    def __init__(self, key: str) -> None:
        # Redacted before it is cut: a key may be anything EnKash echoed, a secret included.
        shown = redact(key)
        shown = shown if len(shown) <= 40 else shown[:39] + "…"
        super().__init__(f"it repeats the key {shown!r}")
        self.key = key


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return found


def read_json(text: str | bytes) -> Any:
    """JSON as EnKash sent it, read strictly: numbers with a fraction or exponent as ``Decimal``;
    ``ValueError`` for anything that is not plainly one JSON value.

    ``json.loads`` keeps the last of two equal keys, so ``{"response_code": 1, "response_code":
    0}`` would read as a success while another reader sees a refusal: a repeated key is refused
    (``DuplicateKey``), as are ``NaN``/``Infinity`` and a nesting too deep to read (a
    ``RecursionError`` inside the parser is turned into a ``ValueError``).
    """
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_no_constants,
            object_pairs_hook=_one_value_per_key,
        )
    except RecursionError:
        raise ValueError("it is nested too deeply to read") from None


def decrypt_body(envelope: dict, client_secret: str) -> dict:
    """The JSON object inside ``{"request": "<base64>"}``; numbers with a fraction as ``Decimal``.

    Raises ``DecryptError`` when the envelope has no ciphertext, the ciphertext does not decrypt
    with this secret, or the plaintext is not a JSON object (read by ``read_json``: a repeated
    key or a nesting too deep to read is not one).
    """
    ciphertext = envelope.get("request") if isinstance(envelope, dict) else None
    if not isinstance(ciphertext, str):
        raise DecryptError('the reply has no "request" ciphertext')
    plaintext = decrypt_text(ciphertext, client_secret)
    try:
        body = read_json(plaintext)
    except DuplicateKey as exc:
        raise DecryptError(f"the decrypted reply is ambiguous: {exc}") from exc
    except ValueError as exc:
        raise DecryptError("the decrypted reply is not JSON") from exc
    if not isinstance(body, dict):
        raise DecryptError("the decrypted reply is not a JSON object")
    return body
