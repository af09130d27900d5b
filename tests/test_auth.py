"""Sign-in: password hashing, local accounts, the durable lockout, the gate and the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.auth import (
    AuthConfig,
    Gate,
    SignInGuard,
    gate,
    hash_password,
    is_local_address,
    load_auth_config,
    parse_auth_config,
    verify_password,
)
from services.config import ConfigError, load_settings
from services.store import Ledger
from tests.auth_support import PEOPLE, PROJECT, new_app, page_text, sign_in, write_secrets


@pytest.fixture
def ledger(tmp_path: Path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield ledger
    ledger.dispose()


@pytest.fixture
def config(tmp_path: Path) -> AuthConfig:
    return load_auth_config(write_secrets(tmp_path))


def test_a_hash_verifies_its_password_only_and_is_salted():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$") and first != second
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsE", first)
    assert not verify_password("correct horse", "not a hash")


def test_password_checks_from_many_threads_run_on_one(monkeypatch):
    """A check takes 19 MiB, which the allocator keeps per thread: on the dashboard's script
    threads ten sign-ins grew the process by 380 MB. All checks run on one thread instead."""
    import threading

    import services.auth as auth

    ran_on: list[str] = []
    real = auth._verify

    def verify(password: str, password_hash: str) -> bool:
        ran_on.append(threading.current_thread().name)
        return real(password, password_hash)

    monkeypatch.setattr(auth, "_verify", verify)
    stored = hash_password("correct horse")
    answers: list[bool] = []

    def check(password: str) -> None:
        answers.append(verify_password(password, stored))

    guesses = ["correct horse", "wrong"] * 4
    threads = [threading.Thread(target=check, args=(guess,)) for guess in guesses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answers) == [False] * 4 + [True] * 4
    assert len(ran_on) == 8 and len(set(ran_on)) == 1
    assert ran_on[0].startswith("password-check")


def test_accounts_are_read_with_roles_and_mistakes_are_named_without_values(tmp_path, config):
    assert set(config.users) == set(PEOPLE)
    assert config.users["vikram"].roles == {"approver"}
    assert "password_hash" not in repr(config.users["asha"])
    with pytest.raises(ConfigError, match="password_hash must be an Argon2id hash") as error:
        parse_auth_config(
            {"points_desk": {"users": {"x": {"roles": ["operator"], "password_hash": "hunter2"}}}}
        )
    assert "hunter2" not in str(error.value)
    with pytest.raises(ConfigError, match="unknown role admin"):
        parse_auth_config(
            {
                "points_desk": {
                    "users": {"x": {"roles": ["admin"], "password_hash": hash_password("p")}}
                }
            }
        )


def test_oidc_roles_come_from_the_email_and_its_domain():
    config = parse_auth_config(
        {
            "points_desk": {
                "oidc_roles": {"@example.com": ["viewer"], "asha@example.com": ["operator"]}
            }
        }
    )
    assert config.roles_for_email("Asha@Example.com") == {"viewer", "operator"}
    assert config.roles_for_email("ravi@example.com") == {"viewer"}
    assert config.roles_for_email("ravi@elsewhere.com") == frozenset()


def test_oidc_only_a_verified_email_gets_roles_and_a_linked_email_is_the_local_person():
    from services.auth import oidc_person

    config = parse_auth_config(
        {
            "points_desk": {
                "users": {
                    "asha": {
                        "name": "Asha Menon",
                        "roles": ["operator"],
                        "password_hash": hash_password("asha-operator-pass-1"),
                        "email": "Asha@Example.com",
                    }
                },
                "oidc_roles": {"@example.com": ["viewer"], "ravi@example.com": ["approver"]},
            }
        }
    )
    unverified = oidc_person(config, {"email": "ravi@example.com", "name": "Ravi"})
    assert unverified.roles == frozenset() and unverified.unverified_email
    denied = oidc_person(config, {"email": "ravi@example.com", "email_verified": False})
    assert denied.roles == frozenset() and denied.unverified_email
    ravi = oidc_person(config, {"email": "Ravi@example.com", "email_verified": True})
    assert ravi.id == "ravi@example.com" and ravi.roles == {"viewer", "approver"}
    assert oidc_person(config, {"email": "ravi@example.com", "email_verified": "true"}).roles
    # The SSO login of a local account's email is that account's person: one id in the ledger.
    asha = oidc_person(config, {"email": "asha@example.com", "email_verified": True})
    assert (asha.id, asha.display_name, asha.method) == ("asha", "Asha Menon", "oidc")
    assert asha.roles == {"operator", "viewer"}
    assert oidc_person(config, {"email_verified": True}) is None


def test_a_local_account_email_must_be_an_address_and_belong_to_one_account():
    def users(**emails):
        return {
            "points_desk": {
                "users": {
                    name: {"roles": ["viewer"], "password_hash": hash_password("p"), "email": e}
                    for name, e in emails.items()
                }
            }
        }

    with pytest.raises(ConfigError, match="email must be an address"):
        parse_auth_config(users(asha="not-an-email"))
    with pytest.raises(ConfigError, match="one email belongs to one person"):
        parse_auth_config(users(asha="a@example.com", asha2="A@example.com"))


def test_the_gate_decides_who_must_sign_in(tmp_path, config):
    sandbox = load_settings(secrets_file=None)
    live = load_settings(secrets_file=None, enkash_base_url="https://enkash.example")
    empty = AuthConfig()
    assert gate(sandbox, empty, oidc=False, local_client=True) is Gate.OPEN
    assert gate(sandbox, empty, oidc=False, local_client=False) is Gate.REMOTE_SANDBOX
    assert gate(sandbox, config, oidc=False, local_client=True) is Gate.SIGN_IN
    assert gate(live, empty, oidc=False, local_client=True) is Gate.UNCONFIGURED
    assert gate(live, empty, oidc=True, local_client=True) is Gate.SIGN_IN
    assert is_local_address("127.0.0.1") and is_local_address("::1")
    assert not is_local_address("10.1.2.3")


def test_five_wrong_passwords_lock_the_account_durably_then_it_unlocks(ledger, config):
    guard = SignInGuard(ledger, config, attempts=5, lockout_minutes=15)
    now = datetime.now(UTC)
    for attempt in range(4):
        result = guard.sign_in("asha", "wrong", now=now + timedelta(seconds=attempt))
        assert not result.ok and result.message == "Wrong username or password."
    fifth = guard.sign_in("asha", "wrong", now=now + timedelta(seconds=4))
    assert "locked for 15 more minutes" in fifth.message
    # Even the right password is refused while locked, and a new guard (a restart) agrees.
    restarted = SignInGuard(ledger, config, attempts=5, lockout_minutes=15)
    locked = restarted.sign_in("asha", PEOPLE["asha"][0], now=now + timedelta(minutes=5))
    assert not locked.ok and "locked" in locked.message
    # Other accounts are not affected.
    assert restarted.sign_in("vikram", PEOPLE["vikram"][0], now=now).ok
    later = now + timedelta(minutes=15, seconds=5)
    assert restarted.sign_in("asha", PEOPLE["asha"][0], now=later).ok


def test_a_success_resets_the_count(ledger, config):
    guard = SignInGuard(ledger, config, attempts=3, lockout_minutes=15)
    now = datetime.now(UTC)
    guard.sign_in("asha", "wrong", now=now)
    guard.sign_in("asha", "wrong", now=now + timedelta(seconds=1))
    assert guard.sign_in("asha", PEOPLE["asha"][0], now=now + timedelta(seconds=2)).ok
    guard.sign_in("asha", "wrong", now=now + timedelta(seconds=3))
    assert guard.locked_until("asha", now + timedelta(seconds=4)) is None


def test_unknown_usernames_take_as_long_and_are_not_stored(ledger, config):
    guard = SignInGuard(ledger, config, attempts=5, lockout_minutes=15)
    guard.sign_in("nobody", "x")  # warm the dummy hash

    def timed(username: str) -> float:
        started = time.perf_counter()
        for _ in range(5):
            guard.sign_in(username, "wrong-password")
        return time.perf_counter() - started

    known, unknown = timed("vikram"), timed("my-password-typed-here")
    assert unknown > known * 0.5  # both do a full Argon2 check (no fast path for unknown names)
    stored = (Path(ledger.engine.url.database)).read_bytes()
    assert b"my-password-typed-here" not in stored


def test_an_unknown_username_gets_the_same_answers_and_lockout_as_a_real_one(ledger, config):
    guard = SignInGuard(ledger, config, attempts=5, lockout_minutes=15)
    now = datetime.now(UTC)

    def answers(username: str) -> list[str]:
        return [
            guard.sign_in(username, "wrong", now=now + timedelta(seconds=n)).message
            for n in range(7)
        ]

    real, unknown = answers("asha"), answers("no-such-person")
    assert real == unknown
    assert unknown[0] == "Wrong username or password."
    assert "locked for 15 more minutes" in unknown[4] and "locked" in unknown[6]
    # Two different unknown names are counted apart; neither name is stored as typed.
    assert guard.sign_in("someone-else", "wrong", now=now).message == "Wrong username or password."
    stored = Path(ledger.engine.url.database).read_bytes()
    assert b"no-such-person" not in stored and b"someone-else" not in stored
    assert guard.attempts_key("No-Such-Person ") == guard.attempts_key("no-such-person")
    assert guard.attempts_key("no-such-person") != guard.attempts_key("someone-else")


def test_every_answer_costs_one_argon2_check(ledger, config, monkeypatch):
    """Unknown, wrong, locked or right: each attempt does the same hashing work, so the time
    taken does not tell the cases apart."""
    from services import auth

    guard = SignInGuard(ledger, config, attempts=2, lockout_minutes=15)
    calls: list[str] = []
    real_verify = auth.verify_password
    monkeypatch.setattr(
        auth, "verify_password", lambda pw, h: calls.append(h) or real_verify(pw, h)
    )
    now = datetime.now(UTC)
    for username, password in [
        ("nobody", "x"),
        ("nobody", "x"),
        ("nobody", "x"),  # locked (unknown)
        ("asha", "x"),
        ("asha", "x"),
        ("asha", PEOPLE["asha"][0]),  # locked (real)
        ("vikram", PEOPLE["vikram"][0]),  # right
    ]:
        before = len(calls)
        guard.sign_in(username, password, now=now)
        assert len(calls) == before + 1, username
        assert calls[-1].startswith("$argon2id$")


def test_sign_in_through_the_form_and_the_lockout_message(desk_env):
    write_secrets(desk_env)
    at = new_app()
    at.run()
    assert "Sign in to Points Desk" in page_text(at)
    for _ in range(4):
        sign_in(at, "asha", "wrong")
        assert "Wrong username or password." in page_text(at)
    sign_in(at, "asha", "wrong")
    assert "locked for 15 more minutes" in page_text(at)
    sign_in(at, "vikram")
    assert "Overview" in page_text(at)
    assert at.session_state["sign_in_password"] == ""  # the password is not kept


def test_live_mode_without_sign_in_shows_no_money_page(desk_env, monkeypatch):
    from services.sandbox import start_sandbox

    with start_sandbox() as sandbox:
        identity = sandbox.identity
        for name, value in {
            "ENKASH_BASE_URL": sandbox.url,
            "ENKASH_PARTNER_ID": identity.partner_id,
            "ENKASH_COMPANY_ID": identity.company_id,
            "ENKASH_CARD_ACCOUNT_ID": identity.card_account_id,
            "ENKASH_CLIENT_ID": identity.client_id,
            "ENKASH_CLIENT_SECRET": identity.client_secret,
            "ENKASH_USERNAME": identity.username,
            "ENKASH_PASSWORD": identity.password,
        }.items():
            monkeypatch.setenv(name, value)
        at = new_app()
        at.run()
        assert not at.exception
        text = page_text(at)
        assert "Sign-in is not configured" in text
        assert "hash-password" in text
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page("pages/debit.py")


def test_hash_password_cli_prints_a_hash_that_verifies():
    done = subprocess.run(
        [sys.executable, "-m", "services.auth", "hash-password", "--stdin"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        cwd=PROJECT,
        check=True,
    )
    printed = done.stdout.strip()
    assert verify_password("a long enough password", printed)
    assert "a long enough password" not in done.stdout + done.stderr
    short = subprocess.run(
        [sys.executable, "-m", "services.auth", "hash-password", "--stdin"],
        input="short\n",
        capture_output=True,
        text=True,
        cwd=PROJECT,
    )
    assert short.returncode == 1 and "at least 12" in short.stderr


# --- the lockout counts wrong passwords in a row, however far apart ------------------------------


def test_wrong_passwords_lock_after_five_in_a_row_however_far_apart(ledger, config):
    import time_machine

    guard = SignInGuard(ledger, config, attempts=5, lockout_minutes=15)
    right = PEOPLE["asha"][0]
    with time_machine.travel(datetime(2026, 3, 2, 9, 0, tzinfo=UTC), tick=False) as clock:
        # Four minutes apart (and once a whole day): the fifth in a row still locks.
        for gap in (4, 4, 24 * 60, 4):
            assert guard.sign_in("asha", "wrong").message == "Wrong username or password."
            clock.shift(timedelta(minutes=gap))
        assert "locked for 15 more minutes" in guard.sign_in("asha", "wrong").message
        clock.shift(timedelta(minutes=14))
        refused = guard.sign_in("asha", right)
        assert not refused.ok and "locked for 1 more minute." in refused.message
        # When the lockout ends the count starts again: four more wrong ones do not lock...
        clock.shift(timedelta(minutes=1))
        for _ in range(4):
            assert guard.sign_in("asha", "wrong").message == "Wrong username or password."
            clock.shift(timedelta(minutes=30))
        # ...the fifth does, and a success after the lockout resets the count.
        assert "locked for 15 more minutes" in guard.sign_in("asha", "wrong").message
        clock.shift(timedelta(minutes=15))
        assert guard.sign_in("asha", right).ok
        for _ in range(4):
            guard.sign_in("asha", "wrong")
            clock.shift(timedelta(hours=5))
        assert guard.locked_until("asha") is None
        assert "locked" in guard.sign_in("asha", "wrong").message


# --- a change to the secrets file takes effect at the next click ---------------------------------


def _next_click(at):
    """The same session's next run of ``app.py`` (under AppTest a switched-to page runs alone)."""
    following = new_app()
    following.session_state["_person"] = at.session_state["_person"]
    following.run()
    assert not following.exception, following.exception
    return following


def _offered(at, pages: tuple[str, ...]) -> set[str]:
    found = set()
    for page in pages:
        try:
            at.switch_page(page)
        except ValueError:
            continue
        found.add(page)
    return found


MONEY_PAGES = ("pages/credit.py", "pages/debit.py", "pages/bulk.py")


def test_a_demoted_account_loses_its_money_pages_at_the_next_click(desk_env, monkeypatch):
    import ui.auth

    write_secrets(desk_env)
    at = sign_in(new_app().run(), "asha")
    assert _offered(at, ("pages/overview.py", *MONEY_PAGES)) == {"pages/overview.py", *MONEY_PAGES}

    parsed: list[object] = []
    real_load = ui.auth.load_auth_config
    monkeypatch.setattr(ui.auth, "load_auth_config", lambda *a: parsed.append(a) or real_load(*a))
    demoted = dict(PEOPLE, asha=(PEOPLE["asha"][0], ["viewer"], "Asha Menon"))
    write_secrets(desk_env, demoted)  # no restart, no cache cleared

    following = _next_click(at)
    assert following.session_state["_person"].roles == {"viewer"}
    assert _offered(following, ("pages/overview.py", *MONEY_PAGES)) == {"pages/overview.py"}
    # A money page still open in the session refuses on its own, too.
    at.switch_page("pages/credit.py").run()
    assert "This page needs the operator role" in page_text(at)
    # The file was parsed once for the change, not on every run.
    _next_click(at)
    assert len(parsed) == 1


def test_a_removed_account_is_signed_out_at_the_next_click_without_a_restart(desk_env):
    write_secrets(desk_env)
    at = sign_in(new_app().run(), "asha")
    write_secrets(desk_env, {k: v for k, v in PEOPLE.items() if k != "asha"})

    following = _next_click(at)
    assert "Sign in to Points Desk" in page_text(following)
    assert "_person" not in following.session_state
    at.switch_page("pages/debit.py").run()
    assert "This page needs the operator role" in page_text(at)
    # Her password no longer signs in either.
    assert "Wrong username or password." in page_text(sign_in(following, "asha"))


def test_a_password_set_anew_signs_out_the_sessions_opened_with_the_old_one(desk_env):
    """A leaked password is replaced in the file: whoever signed in with it is out at the next
    click, and only the new one signs in; the other accounts' sessions carry on."""
    write_secrets(desk_env)
    asha = sign_in(new_app().run(), "asha")
    vikram = sign_in(new_app().run(), "vikram")
    renewed = dict(PEOPLE, asha=("asha-new-pass-5", *PEOPLE["asha"][1:]))
    write_secrets(desk_env, renewed)

    assert "Sign in to Points Desk" in page_text(_next_click(asha))
    assert "Sign in to Points Desk" not in page_text(_next_click(vikram))
    again = new_app().run()
    assert "Wrong username or password." in page_text(sign_in(again, "asha"))
    assert "Sign in to Points Desk" not in page_text(
        sign_in(new_app().run(), "asha", "asha-new-pass-5")
    )


def test_a_mistake_saved_into_the_secrets_file_stops_every_page_until_fixed(desk_env):
    write_secrets(desk_env)
    at = sign_in(new_app().run(), "asha")
    path = desk_env / "no-secrets.toml"
    good = path.read_text()
    path.write_text(good.replace('roles = ["operator"]', 'roles = ["admin"]', 1))

    broken = _next_click(at)
    assert "Points Desk cannot start" in page_text(broken) and "unknown role admin" in page_text(
        broken
    )
    path.write_text(good)
    assert "Overview" in page_text(_next_click(at))


@pytest.mark.browser
def test_in_a_real_browser_a_demoted_then_removed_account_changes_at_the_next_click(tmp_path):
    """The served dashboard (no AppTest shortcuts): the secrets file is edited while Asha is
    signed in, and her very next click shows the change; nothing is restarted."""
    from tests.browser_support import browser_page, running_dashboard, wait_idle

    write_secrets(tmp_path)
    with running_dashboard(tmp_path) as url, browser_page() as page:
        page.goto(url)
        wait_idle(page)
        page.get_by_label("Username").fill("asha")
        page.get_by_label("Password", exact=True).fill(PEOPLE["asha"][0])
        page.get_by_role("button", name="Sign in").click()
        wait_idle(page)
        nav = page.get_by_test_id("stSidebarNav")
        nav.get_by_role("link", name="Credit").wait_for()

        demoted = dict(PEOPLE, asha=(PEOPLE["asha"][0], ["viewer"], "Asha Menon"))
        write_secrets(tmp_path, demoted)
        nav.get_by_role("link", name="History").click()
        wait_idle(page)
        page.get_by_test_id("stSidebar").get_by_text("Signed in as Asha Menon · viewer").wait_for()
        assert nav.get_by_role("link", name="Credit").count() == 0
        assert nav.get_by_role("link", name="Debit").count() == 0

        write_secrets(tmp_path, {k: v for k, v in PEOPLE.items() if k != "asha"})
        nav.get_by_role("link", name="Overview").click()
        wait_idle(page)
        page.get_by_role("heading", name="Sign in to Points Desk").wait_for()
        assert page.get_by_test_id("stSidebarNav").count() == 0
