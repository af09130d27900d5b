"""Test helpers for sign-in: a secrets file with local accounts, and an app signed in as one."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from services.auth import hash_password

PROJECT = Path(__file__).resolve().parent.parent

#: username -> (password, roles, display name). Passwords are test values, never real ones.
PEOPLE = {
    "asha": ("asha-operator-pass-1", ["operator"], "Asha Menon"),
    "vikram": ("vikram-approver-pass-2", ["approver"], "Vikram Rao"),
    "neha": ("neha-approver-pass-3", ["approver", "operator"], "Neha Iyer"),
    "tara": ("tara-viewer-pass-4", ["viewer"], "Tara Das"),
}


@cache
def _hash(password: str) -> str:
    return hash_password(password)


def secrets_toml(people: dict | None = None, extra: str = "") -> str:
    lines = []
    for username, (password, roles, name) in (people or PEOPLE).items():
        lines += [
            f"[points_desk.users.{username}]",
            f'name = "{name}"',
            "roles = [" + ", ".join(f'"{role}"' for role in roles) + "]",
            f'password_hash = "{_hash(password)}"',
            "",
        ]
    return extra + "\n" + "\n".join(lines)


def write_secrets(data_dir: Path, people: dict | None = None, extra: str = "") -> Path:
    """Write the secrets file the isolated env points at (``POINTS_DESK_SECRETS_FILE``)."""
    path = data_dir / "no-secrets.toml"
    path.write_text(secrets_toml(people, extra))
    return path


def new_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(PROJECT / "app.py"), default_timeout=30)


def sign_in(at, username: str, password: str | None = None):
    """Sign in through the form, as a person would."""
    if password is None:
        password = PEOPLE[username][0]
    at.text_input(key="sign_in_username").input(username)
    at.text_input(key="sign_in_password").input(password)
    at.button(key="sign_in_submit").click().run()
    assert not at.exception, at.exception
    return at


def signed_in_app(username: str, password: str | None = None):
    at = new_app()
    at.run()
    assert not at.exception, at.exception
    return sign_in(at, username, password)


def page_text(at) -> str:
    parts = []
    for kind in ("title", "markdown", "success", "error", "warning", "info", "caption"):
        parts.extend(str(element.value) for element in getattr(at, kind))
    return "\n".join(parts)
