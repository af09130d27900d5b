"""Errors are caught by meaning and said in one place; a callback's notice shows once, escaped."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from services import approvals, bulk
from services.allocations import NotProvenAbsent
from services.bulk_files import BulkFileError
from services.enkash import NotSent
from services.errors import ApprovalRequired, Conflict, InvalidInput, NotFound, PointsDeskError
from services.models import SettleOutcome
from services.reconcile import CheckResult
from services.store import DuplicateReference, StatusConflict, UnknownReference
from ui.notice import UNEXPECTED, error_kind, error_message
from ui.text import md


@pytest.mark.parametrize(
    ("error", "meaning"),
    [
        (StatusConflict("x"), Conflict),
        (DuplicateReference("PD1"), Conflict),
        (UnknownReference("x"), NotFound),
        (NotProvenAbsent("x"), Conflict),
        (approvals.AlreadyDecided("x"), Conflict),
        (approvals.NoSuchRequest("x"), NotFound),
        (approvals.CommentRequired("x"), InvalidInput),
        (approvals.SelfApproval("x"), PointsDeskError),
        (bulk.AwaitingApproval("x"), ApprovalRequired),
        (BulkFileError("x"), InvalidInput),
    ],
)
def test_each_error_is_caught_by_what_it_means(error: Exception, meaning: type) -> None:
    assert isinstance(error, meaning)
    assert isinstance(error, PointsDeskError)


def test_a_missing_batch_is_not_found_and_says_which(ledger) -> None:
    with pytest.raises(NotFound, match="There is no batch B-NOPE"):
        bulk.progress(ledger, "B-NOPE")


def test_error_messages_say_what_it_means_and_what_was_not_done() -> None:
    assert error_message(StatusConflict("batch B1 is finished; it cannot be started")) == (
        "batch B1 is finished; it cannot be started. Nothing was changed."
    )
    assert error_message(NotFound("There is no batch B1.")).startswith("There is no batch B1. ")
    waits = bulk.AwaitingApproval("batch B1 is above the approval threshold")
    assert "Nothing is sent until a second person approves it" in error_message(waits)
    assert error_kind(waits) == "warning"
    assert error_kind(StatusConflict("x")) == "error"
    assert error_message(NotSent("EnKash could not be reached")) == (
        "EnKash: EnKash could not be reached"
    )


def test_an_unexpected_error_never_shows_its_own_text() -> None:
    said = error_message(RuntimeError("SELECT password FROM users /srv/secret"))
    assert said == UNEXPECTED
    assert "password" not in said


def test_settle_outcomes_compare_as_their_words() -> None:
    result = CheckResult("PD1", SettleOutcome.SUCCEEDED, "ok")
    assert result.settled and result.outcome == "succeeded"
    assert not CheckResult("PD1", SettleOutcome.NOT_YET, "soon").settled


def _page() -> None:
    import streamlit as st

    from services.store import StatusConflict
    from ui.notice import set_error, set_notice, show_notices

    def act() -> None:
        set_notice("info", "Reason: [Verify here](https://evil.example) **now**")
        set_error(StatusConflict("batch B1 is finished"), lead="Could not start the batch: ")

    show_notices()
    st.button("Act", key="act", on_click=act)


def test_a_notice_from_a_callback_shows_once_and_escaped() -> None:
    at = AppTest.from_function(_page, default_timeout=30).run()
    assert not at.info and not at.error
    at.button(key="act").click().run()
    assert len(at.info) == 1 and len(at.error) == 1
    shown = at.info[0].value
    # escaped: no link, no bold, it reads as typed
    assert shown == md("Reason: [Verify here](https://evil.example) **now**")
    assert "\\](" in shown and "\\*\\*now" in shown
    assert at.error[0].value == (
        "Could not start the batch: batch B1 is finished. Nothing was changed."
    )
    at.run()  # the next run of the page: already said
    assert not at.info and not at.error


def _notice_then_text() -> None:
    import streamlit as st

    from ui.notice import set_notice, show_notices

    st.button("act", key="act", on_click=lambda: set_notice("success", "Batch B1 is sending."))
    show_notices()
    st.markdown("Below the notices")


def _path_of(node, text: str, path: tuple[int, ...] = ()) -> tuple[int, ...] | None:
    """Where Streamlit put the element showing ``text``: its slot in each enclosing block."""
    if getattr(node, "value", None) == text:
        return path
    for index, child in getattr(node, "children", {}).items():
        found = _path_of(child, text, (*path, index))
        if found is not None:
            return found
    return None


def test_what_follows_the_notices_keeps_its_place_when_a_notice_goes() -> None:
    """A notice that goes must not move the page below it: a moved element is shown in its new
    slot and, until that run ends, in its old one too (a live batch panel drawn twice)."""
    at = AppTest.from_function(_notice_then_text, default_timeout=30).run()
    before = _path_of(at._tree, "Below the notices")
    at.button(key="act").click().run()
    assert len(at.success) == 1
    with_notice = _path_of(at._tree, "Below the notices")
    at.run()
    assert not at.success
    after = _path_of(at._tree, "Below the notices")
    assert before is not None and before == with_notice == after
