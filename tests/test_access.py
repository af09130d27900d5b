"""Roles: each sees only the pages it may open, and each page refuses anyone else directly."""

from __future__ import annotations

import pytest

from services.auth import Person
from tests.auth_support import PEOPLE, PROJECT, new_app, page_text, signed_in_app, write_secrets

OVERVIEW, HISTORY, CREATE, CREDIT, DEBIT, BULK, RECONCILE, APPROVALS = (
    "pages/overview.py",
    "pages/history.py",
    "pages/create_account.py",
    "pages/credit.py",
    "pages/debit.py",
    "pages/bulk.py",
    "pages/reconcile.py",
    "pages/approvals.py",
)
VIEW = (OVERVIEW, HISTORY)
MONEY = (CREATE, CREDIT, DEBIT, BULK, RECONCILE)


def offered(at) -> set[str]:
    """The pages the navigation of the last ``app.py`` run registered for this person.

    Only ``switch_page`` (which resolves against that registry) is called, not ``run``: under
    AppTest a switched-to page runs on its own, without ``app.py``, which is also why every page
    must refuse by itself (see the direct-refusal test below).
    """
    found = set()
    for page in (*VIEW, *MONEY, APPROVALS):
        try:
            at.switch_page(page)
        except ValueError:
            continue
        found.add(page)
    at.switch_page(OVERVIEW)
    return found


def renders(at, page: str) -> str:
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return page_text(at)


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("tara", {*VIEW}),
        ("asha", {*VIEW, *MONEY}),
        ("vikram", {*VIEW, APPROVALS}),
        ("neha", {*VIEW, *MONEY, APPROVALS}),
    ],
)
def test_each_role_is_offered_only_its_pages(desk_env, username, expected):
    write_secrets(desk_env)
    at = signed_in_app(username)
    assert offered(at) == expected
    captions = [caption.value for caption in at.sidebar.caption]
    assert any(PEOPLE[username][2] in caption for caption in captions)
    for page in expected:
        assert "This page needs" not in renders(at, page)


def test_the_sidebar_names_the_person_and_their_roles_and_signs_out(desk_env):
    write_secrets(desk_env)
    at = signed_in_app("neha")
    captions = [caption.value for caption in at.sidebar.caption]
    assert "Signed in as **Neha Iyer** · approver, operator" in captions
    at.sidebar.button(key="sidebar_sign_out").click().run()
    assert "_person" not in at.session_state
    assert "Sign in to Points Desk" in page_text(at)
    with pytest.raises(ValueError):
        at.switch_page(DEBIT)


def test_without_accounts_the_sandbox_opens_everything_and_says_so(app):
    captions = [caption.value for caption in app.sidebar.caption]
    assert any("no sign-in (sandbox)" in caption for caption in captions)
    assert offered(app) == {*VIEW, *MONEY, APPROVALS}
    assert "Nothing is waiting for approval." in renders(app, APPROVALS)


@pytest.mark.parametrize("page", [*MONEY, APPROVALS])
def test_a_page_reached_directly_refuses_a_person_without_the_role(desk_env, page):
    """Session-state injection is the honest seam here: the navigation never offers the page
    to a viewer, so the page file is run on its own with a signed-in viewer."""
    from streamlit.testing.v1 import AppTest

    write_secrets(desk_env)
    at = AppTest.from_file(str(PROJECT / page), default_timeout=30)
    at.session_state["_person"] = Person("tara", "Tara Das", frozenset({"viewer"}), "local")
    at.run()
    assert not at.exception, at.exception
    assert "This page needs the" in at.error[0].value
    assert not at.text_input and not at.button  # no form at all


@pytest.mark.parametrize("page", VIEW)
def test_a_view_page_refuses_a_person_with_no_role(desk_env, page):
    from streamlit.testing.v1 import AppTest

    write_secrets(desk_env)
    at = AppTest.from_file(str(PROJECT / page), default_timeout=30)
    at.session_state["_person"] = Person("nobody", "No Body", frozenset(), "local")
    at.run()
    assert not at.exception, at.exception
    assert "This page needs a viewer" in at.error[0].value
    assert not at.metric and not at.button


def test_a_viewer_gets_no_sandbox_tools_on_the_overview(desk_env):
    write_secrets(desk_env)

    def later_look(at):  # the second drawing, with the charts and the sandbox tools
        at.session_state["_first_paint_done"] = {"overview"}
        return at.run()

    viewer = later_look(signed_in_app("tara"))
    assert "load_demo" not in [button.key for button in viewer.button]
    assert "reset_sandbox" not in [button.key for button in viewer.button]
    operator = later_look(signed_in_app("asha"))
    assert "load_demo" in [button.key for button in operator.button]


def test_a_removed_account_is_signed_out_at_the_next_click(desk_env):
    write_secrets(desk_env)
    from ui.auth import _auth_config

    at = signed_in_app("asha")
    assert DEBIT in offered(at)
    write_secrets(desk_env, {k: v for k, v in PEOPLE.items() if k != "asha"})
    _auth_config.clear()  # as a restart would: configuration is read once per process
    fresh = new_app()
    fresh.session_state["_person"] = at.session_state["_person"]
    fresh.run()
    assert "Sign in to Points Desk" in page_text(fresh)


def test_oidc_user_gets_roles_from_their_email(desk_env):
    write_secrets(
        desk_env,
        {},
        extra='[points_desk.oidc_roles]\n"ravi@example.com" = ["approver"]\n',
    )
    at = new_app()
    at.secrets["auth"] = {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "cookie-secret-for-tests",
        "client_id": "points-desk",
        "client_secret": "oidc-client-secret-for-tests",
        "server_metadata_url": "https://id.example.com/.well-known/openid-configuration",
    }
    at.run()
    assert "Sign in with SSO" in [button.label for button in at.button]
    at.user = {
        "is_logged_in": True,
        "email": "ravi@example.com",
        "email_verified": True,
        "name": "Ravi Kumar",
    }
    at.run()
    assert not at.exception, at.exception
    assert offered(at) == {*VIEW, APPROVALS}
    assert any("Ravi Kumar" in caption.value for caption in at.sidebar.caption)
    stranger = new_app()
    stranger.secrets["auth"] = dict(at.secrets["auth"])
    stranger.user = {
        "is_logged_in": True,
        "email": "x@elsewhere.com",
        "email_verified": True,
        "name": "X",
    }
    stranger.run()
    assert "No access yet" in page_text(stranger)
    # The same email the provider has not verified gets no role, and is told why.
    unverified = new_app()
    unverified.secrets["auth"] = dict(at.secrets["auth"])
    unverified.user = {"is_logged_in": True, "email": "ravi@example.com", "name": "Ravi Kumar"}
    unverified.run()
    assert not unverified.exception, unverified.exception
    assert "No access yet" in page_text(unverified)
    assert "has not confirmed that this email address is yours" in page_text(unverified)


@pytest.mark.parametrize("page", [OVERVIEW, DEBIT, APPROVALS])
def test_a_page_run_without_the_gate_refuses_a_session_nobody_signed_in(desk_env, page):
    """Streamlit's first run after a start can run a deep-linked page without app.py."""
    from streamlit.testing.v1 import AppTest

    write_secrets(desk_env)
    at = AppTest.from_file(str(PROJECT / page), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    assert at.error[0].value == "Sign in first: open Points Desk's home page."
    assert not at.metric and not at.text_input and not at.button
