"""One redaction for every text that comes from outside and is stored or shown.

EnKash (or a proxy in front of it) may echo a request back in an error: a token endpoint's
``error_description`` that quotes the form puts the partner password into the message. Every text
from EnKash passes through ``redact()`` before it becomes an error message, a ledger column or an
audit event, so a configured secret never reaches a page, a log line, an export or the ledger.

The process remembers its configured secrets (``remember()``): ``EnkashConfig`` registers the
client secret, the partner password and the Basic credentials built from them; ``Settings``
registers the database password. It also remembers the access and refresh tokens EnKash issues
(``remember_issued()``, called by the client as soon as a sign-in answers): a reply may echo a
token bare (``Token tok-… is not authorised``), where no pattern could see it. Each is replaced
in its plain, URL-encoded and JSON-escaped forms. Bearer/Basic credentials and
``access_token``/``refresh_token``/``password`` values are masked by pattern as well, whatever
their value.

Redact before shortening: a text cut first may end in part of a secret that no longer matches.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

MASK = "[redacted]"
# Shorter values are not remembered: masking "1" or "ab" everywhere would garble every message.
MIN_SECRET_LENGTH = 4

#: How many issued tokens are remembered: the process renews its token every few minutes for as
#: long as it runs, and every remembered form costs a substring check on every redaction. The
#: latest are the ones a reply can echo (an old token is refused at EnKash's door).
ISSUED_KEPT = 16

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()  # the forms of the configured secrets
_issued: deque[str] = deque(maxlen=ISSUED_KEPT)  # the latest tokens EnKash issued
_pattern: re.Pattern[str] | None = None
# (the remembered forms, their pattern) as one value, so a reader sees the two agree.
_masking: tuple[tuple[str, ...], re.Pattern[str] | None] = ((), None)

# Credentials by shape: an Authorization header's value, and name=value / "name": "value" pairs
# whose name says it holds a secret (a form or JSON body echoed back).
_NAMES = r"(?:access_token|refresh_token|id_token|client_secret|clientSecret|password)"
_SHAPES = re.compile(
    # A credential after Bearer/Basic has a digit or is long: "Basic details missing" is words.
    r"(?i)(\b(?:bearer|basic)\s+)"
    r"(?:(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{8,}|[A-Za-z0-9._~+/=-]{20,})"
    rf"|(\b{_NAMES}=)[^\s&\"',;}}]+"
    rf"|([\"']{_NAMES}[\"']\s*:\s*[\"'])[^\"']+"
)


# Every credential shape above names one of these words. In ASCII text a case-insensitive match
# of the shapes is exactly a match in the lowered text, so text without any of them is skipped
# (the shapes' search costs far more than this check); other text is always searched.
_SHAPE_WORDS = ("bearer", "basic", "token", "secret", "password")


def _may_have_shape(text: str) -> bool:
    if not text.isascii():
        return True
    lowered = text.lower()
    return any(word in lowered for word in _SHAPE_WORDS)


def _forms(value: str) -> set[str]:
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def remember(*values: str | SecretStr | None) -> None:
    """Add secret values this process holds; ``None`` and very short values are ignored."""
    global _secrets
    found: set[str] = set()
    for value in values:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            found |= _forms(value)
    with _lock:
        if found <= _secrets:
            return
        _secrets = _secrets | found
        _rebuild()


def remember_issued(*tokens: str | None) -> None:
    """Add tokens EnKash issued to this process (access and refresh tokens): masked like the
    configured secrets from now on. Only the latest ``ISSUED_KEPT`` are kept."""
    wanted = [t for t in tokens if isinstance(t, str) and len(t) >= MIN_SECRET_LENGTH]
    with _lock:
        fresh = [token for token in dict.fromkeys(wanted) if token not in _issued]
        if not fresh:
            return
        _issued.extend(fresh)
        _rebuild()


def _rebuild() -> None:
    """Recompile the masking from the configured secrets and the issued tokens (lock held)."""
    global _pattern, _masking
    every: set[str] = set(_secrets)
    for token in _issued:
        every |= _forms(token)
    # Longest first, so a value is masked whole before any shorter one inside it.
    ordered = sorted(every, key=len, reverse=True)
    _pattern = re.compile("|".join(re.escape(secret) for secret in ordered)) if ordered else None
    _masking = (tuple(ordered), _pattern)


def redact(text: str | None) -> str:
    """``text`` with every remembered secret and every credential-shaped value masked."""
    if not text:
        return text or ""
    text = str(text)
    forms, pattern = _masking
    # Plain substring checks first: far cheaper than the pattern's search when none is there.
    if pattern is not None and any(form in text for form in forms):
        text = pattern.sub(MASK, text)
    if not _may_have_shape(text):
        return text
    return _SHAPES.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + MASK, text)
