"""Text that people or EnKash supply, made inert before it reaches Streamlit's Markdown.

Streamlit renders every label, caption, alert and Markdown body with react-markdown plus GFM,
maths, directives (``:red[...]``) and emoji shortcodes. A reason, a comment, a file name, an
operator's display name or an EnKash message shown there as-is can become a live link
(``[Verify here](https://...)``), a tracking image, coloured or bold text, or a formula on an
approver's screen. ``md`` makes such text read exactly as it was typed.
"""

from __future__ import annotations

import re

# Backslash-escaped: every character that opens inline Markdown (emphasis, code, links, images,
# raw HTML and autolinks, strikethrough, maths, entities, directives and their labels, tables)
# or a block (heading, quote, list) where the text starts a line.
_ESCAPED = re.compile(r"([\\`*_\[\]{}<>!|~$&#+])")
# What opens a block where the text starts a line (a list ``- x``, ``1. x``, ``2) x``, a rule, a
# setext heading's ``===``): its first character, or the dot or parenthesis after the number.
_LEADING_MARKER = re.compile(r"^(?:[-=](?=[-=\s]|$)|\d{1,9}(?=[.)](?:\s|$)))")
# remark-gfm finds bare URLs and email addresses in the parsed text, after escapes are resolved,
# so a backslash cannot stop them. An invisible word joiner breaks their shape instead: between
# ``www`` and its dot, after an email's ``@``, and after a colon that touches the next character
# (``https://``, ``:emoji:``); such a colon is also escaped, since it could open a directive
# (``:red[...]``). A colon before a space ("Reason: ...") opens nothing and stays as it is.
_JOINER = "\u2060"
_WWW_DOT = re.compile(r"(?i)(www)(?=\.)")
_AT = re.compile(r"@(?=\S)")
_COLON = re.compile(r":(?=\S)")


def md(text: object) -> str:
    """``text`` as literal Markdown on one line: it shows as typed, and forms no link, image,
    emphasis, colour, formula or HTML. ``None`` becomes an empty string."""
    if text is None:
        return ""
    flat = " ".join(str(text).split())  # newlines could start a block; tabs an indented one
    flat = _WWW_DOT.sub(rf"\1{_JOINER}", flat)
    flat = _AT.sub(f"@{_JOINER}", flat)
    flat = _ESCAPED.sub(r"\\\1", flat)
    flat = _COLON.sub(rf"\\:{_JOINER}", flat)
    leading = _LEADING_MARKER.match(flat)
    if leading is None:
        return flat
    at = 0 if flat[0] in "-=" else leading.end()  # ``- x`` -> ``\- x``; ``1. x`` -> ``1\. x``
    return flat[:at] + "\\" + flat[at:]


def code(text: object) -> str:
    """``text`` as an inline code span (identifiers: card ids, references, transaction ids).
    Nothing inside a code span is Markdown; a backtick would end it, so it becomes ``'``."""
    flat = " ".join(str(text if text is not None else "").split()).replace("`", "'")
    return f"`{flat}`" if flat else "—"
