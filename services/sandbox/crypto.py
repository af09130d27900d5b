"""The sandbox's own AES payload envelope (deliberately not shared with the client's).

**Assumed** (from EnKash's Payout guide, taken to apply to the reward APIs too): AES-128 in ECB
mode with PKCS7 (a.k.a. PKCS5) padding, key = the first 16 bytes of SHA-256 of the client secret
(UTF-8), ciphertext Base64-encoded (standard alphabet, with padding). ECB is weak; it is modelled
only because the peer requires it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def key_for(client_secret: str) -> bytes:
    """The AES-128 key derived from a client secret."""
    return hashlib.sha256(client_secret.encode("utf-8")).digest()[:16]


def encrypt_text(plaintext: str, client_secret: str) -> str:
    """Base64 of AES-128-ECB(PKCS7(plaintext UTF-8))."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key_for(client_secret)), modes.ECB()).encryptor()  # noqa: S305 (peer requires ECB)
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def decrypt_text(ciphertext_b64: str, client_secret: str) -> str:
    """Inverse of ``encrypt_text``; ``ValueError`` for anything that does not decrypt cleanly."""
    try:
        raw = base64.b64decode(ciphertext_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("ciphertext is not base64") from exc
    if not raw or len(raw) % 16:
        raise ValueError("ciphertext is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key_for(client_secret)), modes.ECB()).decryptor()  # noqa: S305 (peer requires ECB)
    padded = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        return plain.decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("ciphertext does not decrypt with this key") from exc
