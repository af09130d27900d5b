"""What a button did, said once on the page that follows it.

A button's callback runs before the page is drawn again, so it cannot draw; it leaves a notice
with ``set_notice`` instead, and the page shows every waiting notice once with ``show_notices``
(where it wants them: at the top, in an expander ...). A notice is shown once and then forgotten.

``error_message`` is the one place that turns a use case's error into the words a page shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import streamlit as st

from services.enkash import EnkashError
from services.errors import ApprovalRequired, Conflict, InvalidInput, NotFound, PointsDeskError
from ui.text import md

log = logging.getLogger("points_desk.ui")

Kind = Literal["success", "info", "warning", "error"]
_KEY = "_notices"
_ICONS: dict[str, str] = {"success": "✅", "info": "ℹ️", "warning": "⏳", "error": "⛔"}

#: Said when something failed that no use case names: never the exception's own text, which may
#: hold anything (a query, a path); the log has it.
UNEXPECTED = "Something went wrong and nothing more was done; the log has the details."


@dataclass(frozen=True)
class Notice:
    kind: Kind
    markdown: str  # safe to render: supplied text in it went through md() or code()
    icon: str


def set_notice(
    kind: Kind, text: object, *, icon: str | None = None, markdown: bool = False
) -> None:
    """Leave a notice for the next run of the page (call it from a button's callback).

    ``text`` is escaped with ``md`` so it reads exactly as written. Pass ``markdown=True`` only
    for text built from ``md()``/``code()`` pieces on purpose (bold words, code spans).
    """
    body = str(text) if markdown else md(text)
    notices: list[Notice] = st.session_state.setdefault(_KEY, [])
    notices.append(Notice(kind, body, icon or _ICONS[kind]))


def set_error(error: BaseException, *, lead: str = "") -> None:
    """A notice for an error, in the words of ``error_message`` (``lead`` goes before them)."""
    set_notice(error_kind(error), f"{lead}{error_message(error)}")


def pending_notices() -> list[Notice]:
    """The notices not shown yet (without forgetting them)."""
    return list(st.session_state.get(_KEY, []))


def show_notices() -> None:
    """Show every waiting notice, once.

    They go in one container that is drawn even when there is none, so what the page draws
    below keeps its place when a notice goes on the next run. Otherwise everything below moves
    up one slot, and for the length of that run the browser shows an element both in its new
    slot and, not yet replaced, in its old one (a live batch panel twice, for instance).
    """
    notices = st.session_state.pop(_KEY, [])
    with st.container():
        for notice in notices:
            getattr(st, notice.kind)(notice.markdown, icon=notice.icon)


def error_kind(error: BaseException) -> Kind:
    """``warning`` for what waits on someone (an approval), ``error`` for what was refused."""
    return "warning" if isinstance(error, ApprovalRequired) else "error"


def error_message(error: BaseException) -> str:
    """What a page says for ``error`` (plain text: escape it before Markdown, as set_notice does).

    A use case's errors already speak a manager's words; this adds what the kind of error means
    to the person reading and hides whatever was not meant to be shown.
    """
    if isinstance(error, PointsDeskError):
        said = error.message.strip().rstrip(".") or type(error).__name__
        if isinstance(error, ApprovalRequired):
            return f"{said}. Nothing is sent until a second person approves it."
        if isinstance(error, NotFound):
            return f"{said}. It may have been removed, or the page is out of date: reload it."
        if isinstance(error, Conflict):
            return f"{said}. Nothing was changed."
        if isinstance(error, InvalidInput):
            return f"{said}."
        return f"{said}."
    if isinstance(error, EnkashError):
        return f"EnKash: {error.message}"  # already redacted by the client
    log.error("unexpected error shown as a notice", exc_info=error)
    return UNEXPECTED
