"""Hostile text in every field a page shows stays text: no live link, image, HTML, maths or
colour reaches an operator's or approver's screen (AppTest, with sign-in and the sandbox)."""

from __future__ import annotations

import pytest

from tests.auth_support import new_app, sign_in, write_secrets
from tests.markdown_support import hostile, markdown_strings, problems

CREATE, CREDIT, DEBIT, BULK, RECONCILE, APPROVALS, HISTORY = (
    "pages/create_account.py",
    "pages/credit.py",
    "pages/debit.py",
    "pages/bulk.py",
    "pages/reconcile.py",
    "pages/approvals.py",
    "pages/history.py",
)
# Each hostile text carries a marker naming the field it was typed into.
MAKER_NAME, CHECKER_NAME = "MAKERNAME", "CHECKERNAME"
CREATE_REASON, CREDIT_REASON, DEBIT_REASON = "CREATEWHY", "CREDITWHY", "DEBITWHY"
ROW_REASON, COMMENT, FILE_NAME, ENKASH_MESSAGE = "ROWWHY", "COMMENTX", "FILENAME", "ENKASHSAID"
# Shown in Markdown somewhere (the row reason and the comment show only in tables).
MARKERS = (
    MAKER_NAME,
    CHECKER_NAME,
    CREATE_REASON,
    CREDIT_REASON,
    DEBIT_REASON,
    ENKASH_MESSAGE,
    FILE_NAME,
)
EVERY_MARKER = (*MARKERS, ROW_REASON, COMMENT)
# TOML basic strings: the secrets file holds the display names, so no quote or backslash.
PEOPLE = {
    "maker": ("maker-operator-pass-1", ["operator"], hostile(MAKER_NAME).replace("`", "'")),
    "checker": ("checker-approver-pass-2", ["approver"], hostile(CHECKER_NAME).replace("`", "'")),
}
EMAIL = "verify.here@evil.example"


class Screens:
    """Checks every rendered run; remembers which hostile texts reached a screen."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.found: dict[str, list[str]] = {}

    def check(self, at, where: str) -> None:
        assert not at.exception, at.exception
        for source in markdown_strings(at):
            # Only strings holding supplied text: the app's own use directives (badges).
            supplied = "evil" in source or any(marker in source for marker in EVERY_MARKER)
            if supplied and (found := problems(source, EVERY_MARKER)):
                self.found.setdefault(where, []).extend(found)
            self.seen |= {marker for marker in MARKERS if marker in source}


def signed_in(username: str):
    at = new_app()
    at.run()
    return sign_in(at, username, PEOPLE[username][0])


def pick_card(at, key: str, amount: str, reason: str) -> None:
    at.text_input(key=f"{key}_query").input("Ravi").run()
    at.text_input(key=f"{key}_amount").input(amount)
    at.text_input(key=f"{key}_reason").input(reason)


@pytest.fixture
def hostile_desk(desk_env, monkeypatch):
    monkeypatch.setenv("POINTS_DESK_APPROVAL_DEBIT_THRESHOLD", "100")
    monkeypatch.setenv("POINTS_DESK_APPROVAL_BATCH_THRESHOLD", "100")
    write_secrets(desk_env, PEOPLE)
    return desk_env


def test_supplied_text_never_becomes_a_link_image_or_markup_on_any_page(hostile_desk):
    from ui.context import _desk

    screens = Screens()
    maker = signed_in("maker")
    screens.check(maker, "sidebar of the maker")
    knobs = _desk().sandbox.knobs

    # Create account: the reason and an email address with a domain in it.
    maker.switch_page(CREATE).run()
    for key, value in {
        "new_first_name": "Ravi",
        "new_email": EMAIL,
        "new_mobile": "9600098867",
        "new_amount": "1500",
        "new_reason": hostile(CREATE_REASON),
    }.items():
        maker.text_input(key=key).input(value)
    maker.selectbox(key="new_title").select("Mr")
    maker.selectbox(key="new_gender").select("M")
    maker.button(key="create_submit").click().run()
    screens.check(maker, "create account outcome")

    # Credit refused by EnKash with a hostile message.
    knobs.refuse_with = hostile(ENKASH_MESSAGE)
    maker.switch_page(CREDIT).run()
    pick_card(maker, "credit", "10", hostile(CREDIT_REASON))
    maker.button(key="credit_submit").click().run()
    assert maker.error, "the refusal is shown"
    screens.check(maker, "refused credit outcome")
    knobs.refuse_with = ""

    # Debit above the approval threshold: the confirmation shows the reason.
    maker.switch_page(DEBIT).run()
    pick_card(maker, "debit", "500", hostile(DEBIT_REASON))
    maker.button(key="debit_submit").click().run()
    screens.check(maker, "debit confirmation")
    maker.button(key="debit_confirm").click().run()
    screens.check(maker, "debit waiting for approval")

    # A bulk file with a hostile name and row reason, held for approval.
    card_id = _desk().ledger.rows()[0].card_id
    csv = f"kind,card_id,amount,reason\ncredit,{card_id},200,{hostile(ROW_REASON)}\n"
    maker.switch_page(BULK).run()
    maker.file_uploader[0].upload(f"{hostile(FILE_NAME)}.csv", csv.encode(), "text/csv")
    maker.run()
    screens.check(maker, "bulk preview")
    maker.button(key="bulk_send").click().run()
    screens.check(maker, "bulk confirmation")
    maker.button(key="bulk_confirm").click().run()
    screens.check(maker, "bulk batch held for approval")

    # An unknown outcome to reconcile, then the Reconcile page and its actions.
    knobs.malformed_rate = 1.0
    maker.switch_page(CREDIT).run()
    maker.button(key="credit_new").click().run()
    pick_card(maker, "credit", "5", hostile(CREDIT_REASON))
    maker.button(key="credit_submit").click().run()
    knobs.malformed_rate = 0
    knobs.refuse_with = hostile(ENKASH_MESSAGE)
    maker.switch_page(RECONCILE).run()
    screens.check(maker, "reconcile")
    maker.button(key="check_all").click().run()
    screens.check(maker, "reconcile after checking")
    maker.button(key="run_drift").click().run()
    screens.check(maker, "drift check")

    # The approver: both requests, then decisions with hostile comments.
    checker = signed_in("checker")
    screens.check(checker, "sidebar of the approver")
    checker.switch_page(APPROVALS).run()
    screens.check(checker, "approval queue")
    debit_card, batch_card = sorted(
        (c for c in checker.text_input if c.key.startswith("approval_comment_")),
        key=lambda c: c.key,
    )
    debit_card.input(hostile(COMMENT)[:200])
    checker.button(key=debit_card.key.replace("approval_comment", "approve")).click().run()
    screens.check(checker, "approved debit refused by EnKash")
    knobs.refuse_with = ""
    checker.text_input(key=batch_card.key).input(hostile(COMMENT)[:200])
    checker.button(key=batch_card.key.replace("approval_comment", "reject")).click().run()
    screens.check(checker, "rejected batch")

    # History: every transaction's detail view.
    checker.switch_page(HISTORY).run()
    screens.check(checker, "history")
    details = checker.selectbox(key="history_detail")
    for label in details.options:
        reference = label.rsplit(" · ", 1)[1]
        details.set_value(reference).run()
        screens.check(checker, f"history detail of {reference}")
        details = checker.selectbox(key="history_detail")

    assert not screens.found, "\n".join(f"{where}: {bad}" for where, bad in screens.found.items())
    assert screens.seen == set(MARKERS), f"never shown: {set(MARKERS) - screens.seen}"
