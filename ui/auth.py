"""The sign-in gate ``app.py`` runs before any page: OIDC, local accounts, or open sandbox.

Who is signed in lives in ``st.session_state["_person"]`` (a ``services.auth.Person``); a local
account's roles are re-read from the configuration on every run, and the secrets file is parsed
again whenever it changes, so removing an account or a role takes effect at the next click: a
removed account's open session is signed out, a demoted one loses the pages it may no longer use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import streamlit as st

from services.auth import (
    ROLES,
    AuthConfig,
    Gate,
    Person,
    SignInGuard,
    credential_of,
    gate,
    is_local_address,
    load_auth_config,
    oidc_person,
)
from services.config import ConfigError, secrets_file_path
from services.desk import os_operator
from ui.context import desk
from ui.text import md

_PERSON = "_person"


class _SecretsFile:
    """The accounts of the secrets file, parsed again only when the file has changed.

    Every run of every session asks; a ``stat`` (a few microseconds) tells whether the file is
    the one parsed last (same path, size, inode, modification and change times). The file is
    stat-ed *before* it is read, so a change made while it is being read is seen at the next run.
    A file with a mistake is not remembered: each run says what to fix until it is fixed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parsed: tuple[tuple[Path, tuple[int, ...] | None], AuthConfig] | None = None

    def config(self) -> AuthConfig:
        path = secrets_file_path()
        seen = (path, _stamp(path))
        parsed = self._parsed
        if parsed is not None and parsed[0] == seen:
            return parsed[1]
        with self._lock:
            parsed = self._parsed
            if parsed is None or parsed[0] != seen:
                parsed = (seen, load_auth_config(path))
                self._parsed = parsed
        return parsed[1]


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What changes when the file does (``None``: there is no file)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_size, found.st_ino, found.st_mtime_ns, found.st_ctime_ns)


@st.cache_resource(show_spinner=False)
def _auth_config() -> _SecretsFile:
    return _SecretsFile()


def auth_config() -> AuthConfig:
    """Accounts from the secrets file as it is now; on a mistake there, say what to fix and
    stop."""
    try:
        return _auth_config().config()
    except ConfigError as error:
        st.error(f"Points Desk cannot start: {md(error)}", icon="⚙️")
        st.stop()
        raise  # unreachable


def oidc_providers() -> list[str | None] | None:
    """The ``st.login`` providers of Streamlit's ``[auth]`` secrets section, if there is one.

    ``[None]`` is the default provider (``[auth]`` holds ``client_id`` itself); named providers
    are ``[auth.<name>]`` tables.
    """
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:  # Streamlit's "no secrets file at all"
        return None
    if not isinstance(section, Mapping) or not section:
        return None
    named = [name for name, value in section.items() if isinstance(value, Mapping)]
    if "client_id" in section or not named:
        return [None, *named] if "client_id" in section else [None]
    return named


def current_person() -> Person | None:
    """Who is signed in to this session (``None``: nobody), with the roles the configuration
    gives them now: a demoted account holds only its remaining roles, a removed one none.

    The gate in ``app.py`` refreshes the person before every page (and signs a removed account
    out). Checking again here, a ``stat`` and a lookup, keeps a page that runs without the gate
    (Streamlit runs a deep-linked page on its own on the first run after a start) from trusting
    roles the session was given before the configuration changed.
    """
    person = st.session_state.get(_PERSON)
    if person is None:
        return None
    # Only an SSO person needs the providers read (the gate checks them for the sandbox's).
    providers = oidc_providers() if person.method == "oidc" else None
    today = _today(person, auth_config(), providers)
    if today is None:
        today = replace(person, roles=frozenset())  # gone: no role until the gate signs it out
    if today != person:
        st.session_state[_PERSON] = today
    return today


def sign_in_gate() -> st.Page | None:
    """``None`` when the person may use the dashboard; otherwise the only page to show."""
    settings = desk().settings
    config = auth_config()
    providers = oidc_providers()
    decision = gate(
        settings,
        config,
        oidc=providers is not None,
        local_client=is_local_address(st.context.ip_address),
    )
    if decision is Gate.OPEN:
        user = os_operator()
        st.session_state[_PERSON] = Person(user, user, frozenset(ROLES), "sandbox")
        return None
    if decision is Gate.UNCONFIGURED:
        st.session_state.pop(_PERSON, None)
        return st.Page(_unconfigured_page, title="Sign-in needed", icon="🔒", url_path="sign-in")
    if decision is Gate.REMOTE_SANDBOX:
        st.session_state.pop(_PERSON, None)
        return st.Page(_remote_sandbox_page, title="Sign-in needed", icon="🔒", url_path="sign-in")

    person = _refreshed(config, providers)
    if person is None:
        st.session_state.pop(_PERSON, None)
        return st.Page(_sign_in_page, title="Sign in", icon="🔐", url_path="sign-in")
    st.session_state[_PERSON] = person
    if not person.roles:
        return st.Page(_no_role_page, title="No access", icon="🔒", url_path="no-access")
    return None


def _refreshed(config: AuthConfig, providers: list[str | None] | None) -> Person | None:
    """The signed-in person with today's roles, or None."""
    # st.user.is_logged_in, read with .get: AppTest seeds st.user without that default key.
    if providers is not None and st.user.get("is_logged_in", False):
        claims = {key: st.user.get(key) for key in ("email", "email_verified", "name")}
        person = oidc_person(config, claims)
        if person is not None:
            return person
    person = st.session_state.get(_PERSON)
    if person is None or person.method != "local":
        return None
    return _today(person, config, providers)


def _today(person: Person, config: AuthConfig, providers: list[str | None] | None) -> Person | None:
    """``person`` as the configuration has them now, or None when it no longer lets them in."""
    if person.method == "local":
        account = config.users.get(person.id)
        if account is None or person.credential != credential_of(account.password_hash):
            return None  # the account was removed, or its password set anew: signed out
        return Person(
            account.username,
            account.display_name,
            account.roles,
            "local",
            email=account.email,
            credential=person.credential,
        )
    if person.method == "oidc":
        if providers is None or not st.user.get("is_logged_in", False):
            return None
        claims = {key: st.user.get(key) for key in ("email", "email_verified", "name")}
        return oidc_person(config, claims)
    # The open sandbox's person: only while nobody has to sign in.
    if providers is None and not config.has_local_users:
        return person
    return None


def sign_out() -> None:
    person = st.session_state.get(_PERSON)
    st.session_state.pop(_PERSON, None)
    if person is not None and person.method == "oidc":
        st.logout()


def _attempt_local_sign_in() -> None:
    """Sign-in form callback. The password is wiped from session state straight away."""
    username = st.session_state.get("sign_in_username", "")
    password = st.session_state.get("sign_in_password", "")
    st.session_state["sign_in_password"] = ""
    the_desk = desk()
    guard = SignInGuard.from_settings(the_desk.ledger, auth_config(), the_desk.settings)
    result = guard.sign_in(username, password)
    del password
    if result.ok:
        st.session_state[_PERSON] = result.person
        st.session_state.pop("_sign_in_error", None)
    else:
        st.session_state["_sign_in_error"] = result.message


def _mode_line() -> None:
    if desk().is_sandbox:
        st.badge("Sandbox — no real points move", icon="🧪", color="orange")
    else:
        st.badge("Live EnKash", icon="🟢", color="green")


def _sign_in_page() -> None:
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        _mode_line()
        st.title("Sign in to Points Desk")
        st.caption("Points Desk moves real value, so every action is recorded under your name.")
        providers = oidc_providers()
        if providers is not None:
            for provider in providers:
                label = f"Sign in with {provider.title()}" if provider else "Sign in with SSO"
                if st.button(label, key=f"sso_{provider or 'default'}", type="primary"):
                    st.login(provider)
            if auth_config().has_local_users:
                st.caption("or with a Points Desk account")
        if auth_config().has_local_users:
            with st.form("sign_in", enter_to_submit=True, border=True):
                st.text_input("Username", key="sign_in_username", autocomplete="username")
                st.text_input(
                    "Password",
                    key="sign_in_password",
                    type="password",
                    autocomplete="current-password",
                )
                error = st.session_state.get("_sign_in_error")
                if error:
                    st.error(md(error), icon="⛔")
                st.form_submit_button(
                    "Sign in",
                    key="sign_in_submit",
                    type="primary",
                    on_click=_attempt_local_sign_in,
                    width="stretch",
                )
            st.caption(
                "Forgot your password? Ask whoever runs Points Desk to set a new one in its "
                "secrets file. Five wrong passwords in a row lock the account for a while; the "
                "message above says until when."
            )


_HOW_TO = """
Add local accounts to `.streamlit/secrets.toml` (hash each password with
`python -m services.auth hash-password`):

```toml
[points_desk.users.asha]
name = "Asha Menon"
roles = ["operator"]
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
```

or configure single sign-on (OIDC) in an `[auth]` section and give people roles in
`[points_desk.oidc_roles]`. Roles: `viewer`, `operator` (moves points), `approver`.
The README's *Sign-in and roles* section has the details.
"""


def _unconfigured_page() -> None:
    _mode_line()
    st.title("Sign-in is not configured")
    st.error(
        "Points Desk is connected to the **live** EnKash host, so it shows no page until people "
        "have to sign in: every movement of points must be attributable to a person.",
        icon="🔒",
    )
    st.markdown(_HOW_TO)


def _remote_sandbox_page() -> None:
    _mode_line()
    st.title("Sign-in is not configured")
    st.warning(
        "This sandbox runs without sign-in, which is only allowed on the computer it runs on. "
        "To share it, configure accounts.",
        icon="🔒",
    )
    st.markdown(_HOW_TO)


def _no_role_page() -> None:
    person = current_person()
    _mode_line()
    st.title("No access yet")
    if person is not None and person.unverified_email:
        st.warning(
            "Your sign-in provider has not confirmed that this email address is yours "
            "(email_verified), so it gives no role in Points Desk. Verify the address with your "
            "provider, or ask whoever runs Points Desk for a local account.",
            icon="🔒",
        )
        st.button("Sign out", on_click=sign_out, key="no_role_sign_out")
        return
    st.info(
        f"You are signed in as **{md(person.display_name) if person else 'unknown'}**, but have no "
        "role in Points Desk. Ask whoever runs it to give you one (viewer, operator or approver).",
        icon="🔒",
    )
    st.button("Sign out", on_click=sign_out, key="no_role_sign_out")
