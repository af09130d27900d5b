"""Who may use Points Desk: accounts, roles, password checks and the durable sign-in lockout.

Two ways to sign in, chosen by configuration:

* **OIDC** through Streamlit's ``st.login`` when the secrets file has an ``[auth]`` section; the
  provider proves the email, and ``[points_desk.oidc_roles]`` gives it roles.
* **Local accounts** from ``[points_desk.users.<username>]`` in the secrets file, each with an
  Argon2id ``password_hash`` (make one with ``python -m services.auth hash-password``), ``roles``
  and a display ``name``.

Passwords are checked in constant time against the stored hash, and against a dummy hash for an
unknown username, so the time taken does not say whether a username exists. After
``POINTS_DESK_SIGN_IN_ATTEMPTS`` wrong passwords in a row (since the last right one, however far
apart) an account is locked for ``POINTS_DESK_LOCKOUT_MINUTES``, however many guesses arrive at
once; attempts are kept in the ledger database, so a restart does not unlock it. A username with
no account is answered exactly the same way (its attempts are counted under a keyed hash of the
name), so the answers do not say which usernames exist either. A password is never logged,
stored or echoed, not even a wrong one.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import logging
import os
import sys
import tomllib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from services.config import ConfigError, Settings, secrets_file_path
from services.store import Ledger

log = logging.getLogger("points_desk.auth")

ROLES = ("viewer", "operator", "approver")

#: Which roles grant each capability a page can need (see ``ui/access.py``).
CAPABILITY_ROLES: dict[str, frozenset[str]] = {
    "view": frozenset({"viewer", "operator", "approver"}),
    "move": frozenset({"operator"}),
    "approve": frozenset({"approver"}),
}

UNKNOWN_USER = "(unknown)"


def can(roles: frozenset[str] | set[str], capability: str) -> bool:
    """Whether someone holding ``roles`` has ``capability`` (``view``, ``move``, ``approve``)."""
    if capability not in CAPABILITY_ROLES:
        raise ValueError(f"unknown capability {capability!r}")
    return bool(CAPABILITY_ROLES[capability] & set(roles))


# --- password hashing ----------------------------------------------------------------------------

# Argon2id with OWASP's minimum parameters (19 MiB, 2 passes, 1 lane): ~20 ms per check here.
# The parameters travel inside each hash, so stronger ones can be adopted later without breaking
# the hashes already in secrets files. Argon2id comes with ``cryptography`` (already pinned), so no
# extra library is needed.
_ARGON2 = {"length": 32, "iterations": 2, "lanes": 1, "memory_cost": 19 * 1024}


def hash_password(password: str) -> str:
    """An Argon2id hash in PHC form (``$argon2id$v=19$m=...``), with a fresh random salt."""
    if not password:
        raise ValueError("a password cannot be empty")
    return Argon2id(salt=os.urandom(16), **_ARGON2).derive_phc_encoded(password.encode())


def is_password_hash(text: str) -> bool:
    return isinstance(text, str) and text.startswith("$argon2id$")


#: Every password check runs on this one thread. A check takes 19 MiB, and the C allocator keeps
#: that block in the arena of the thread that asked for it: with checks on the dashboard's
#: script threads (a new one for each run), ten sign-ins left the process 380 MB larger. On one
#: thread the block is reused. Checks also queue one at a time, so a burst of sign-in attempts
#: cannot take more than one core.
_CHECKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="password-check")


def verify_password(password: str, password_hash: str) -> bool:
    """Whether ``password`` matches; the comparison inside is constant-time."""
    return _CHECKER.submit(_verify, password, password_hash).result()


def _verify(password: str, password_hash: str) -> bool:
    try:
        Argon2id.verify_phc_encoded(password.encode(), password_hash)
    except (InvalidKey, ValueError, TypeError):
        return False
    return True


_dummy_hash: str | None = None


def _dummy() -> str:
    """A hash no password matches, checked for unknown usernames so they take as long."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(os.urandom(24).hex())
    return _dummy_hash


# --- accounts and roles --------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalUser:
    """A configured local account. The hash is kept out of ``repr`` (and so out of logs)."""

    username: str
    display_name: str
    roles: frozenset[str]
    password_hash: str = field(repr=False)
    # The person's email: their SSO sign-in with this (verified) email is the same person.
    email: str | None = None


@dataclass(frozen=True)
class Person:
    """Someone using Points Desk now: ``id`` is what ledger rows record as the operator."""

    id: str
    display_name: str
    roles: frozenset[str]
    method: str  # "local", "oidc" or "sandbox"
    email: str | None = None
    # OIDC only: the provider did not mark the email verified, so it grants no role.
    unverified_email: bool = False
    # Local only: which password it signed in with (``credential_of`` its hash), so a password
    # set anew in the secrets file ends the sessions opened with the old one.
    credential: str | None = field(default=None, repr=False)

    def can(self, capability: str) -> bool:
        return can(self.roles, capability)


def credential_of(password_hash: str) -> str:
    """A fingerprint of a stored password hash (not the hash: a session may keep it)."""
    return hashlib.sha256(b"points-desk credential\x00" + password_hash.encode()).hexdigest()[:32]


def _same(text: str | None) -> str:
    """One spelling of a name or an email for comparing identities."""
    return " ".join(str(text or "").split()).casefold()


@dataclass(frozen=True)
class AuthConfig:
    """Accounts and role assignments from the secrets file."""

    users: Mapping[str, LocalUser] = field(default_factory=dict)
    oidc_roles: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def has_local_users(self) -> bool:
        return bool(self.users)

    def roles_for_email(self, email: str | None) -> frozenset[str]:
        """Roles of an OIDC-proven email: its own entry plus its ``@domain`` entry."""
        if not email or "@" not in email:
            return frozenset()
        email = email.strip().lower()
        domain = "@" + email.rsplit("@", 1)[1]
        return self.oidc_roles.get(email, frozenset()) | self.oidc_roles.get(domain, frozenset())

    def account_for_email(self, email: str | None) -> LocalUser | None:
        """The local account whose configured ``email`` this is (the same person), if any."""
        wanted = _same(email)
        if not wanted:
            return None
        return next((u for u in self.users.values() if u.email and _same(u.email) == wanted), None)

    def identities(self, person: Person) -> frozenset[str]:
        """Every name ``person`` goes by here, compared case-blind: their id, email and display
        name, and the username, email and name of every local account that shares any of them.
        A request made under any of these is their own (maker-checker needs someone else)."""
        names = {_same(n) for n in (person.id, person.email, person.display_name)} - {""}
        grown = True
        while grown:
            grown = False
            for user in self.users.values():
                own = {_same(n) for n in (user.username, user.email, user.display_name)} - {""}
                if own & names and not own <= names:
                    names |= own
                    grown = True
        return frozenset(names)


def _is_true(value: Any) -> bool:
    """An OIDC boolean claim: ``true`` (some providers send the string "true")."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def oidc_person(config: AuthConfig, claims: Mapping[str, Any]) -> Person | None:
    """Who an OIDC sign-in is (from ``st.user``'s claims), or None without an email.

    Only an email the provider marks verified (``email_verified``) gets roles: an unverified
    one could be anybody's. A verified email configured on a local account is that account's
    person (its username is the id ledger rows record), so one person is one identity.
    """
    email = _same(claims.get("email"))
    if not email:
        return None
    name = " ".join(str(claims.get("name") or email).split())
    if not _is_true(claims.get("email_verified")):
        return Person(email, name, frozenset(), "oidc", email=email, unverified_email=True)
    roles = config.roles_for_email(email)
    account = config.account_for_email(email)
    if account is not None:
        return Person(
            account.username, account.display_name, account.roles | roles, "oidc", email=email
        )
    return Person(email, name, roles, "oidc", email=email)


def _roles(value: Any, where: str) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
        raise ConfigError(f'{where}: roles must be a list such as ["operator"]')
    unknown = sorted({role.strip().lower() for role in value} - set(ROLES))
    if unknown:
        raise ConfigError(
            f"{where}: unknown role {', '.join(unknown)}; roles are {', '.join(ROLES)}"
        )
    return frozenset(role.strip().lower() for role in value)


def parse_auth_config(data: Mapping[str, Any]) -> AuthConfig:
    """Accounts from the parsed secrets TOML; ``ConfigError`` names what is wrong (never a
    value: a misplaced password must not be echoed into a message)."""
    desk = data.get("points_desk") or {}
    if not isinstance(desk, Mapping):
        raise ConfigError("[points_desk] in the secrets file must be a table")
    users: dict[str, LocalUser] = {}
    emails: dict[str, str] = {}
    for name, entry in (desk.get("users") or {}).items():
        username = str(name).strip().lower()
        where = f"[points_desk.users.{name}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a table with password_hash, roles and name")
        password_hash = entry.get("password_hash")
        if not is_password_hash(password_hash):
            raise ConfigError(
                f"{where}: password_hash must be an Argon2id hash; make one with "
                "`python -m services.auth hash-password` (a plain password is not accepted)"
            )
        roles = _roles(entry.get("roles", []), where)
        if not roles:
            raise ConfigError(f"{where}: give the account at least one role ({', '.join(ROLES)})")
        email = entry.get("email")
        if email is not None:
            if not isinstance(email, str) or "@" not in email or len(email.split()) != 1:
                raise ConfigError(f'{where}: email must be an address such as "asha@company.com"')
            email = _same(email)
            if email in emails:
                raise ConfigError(
                    f"{where}: the same email is on [points_desk.users.{emails[email]}]; "
                    "one email belongs to one person"
                )
            emails[email] = name
        users[username] = LocalUser(
            username=username,
            display_name=str(entry.get("name") or username),
            roles=roles,
            password_hash=password_hash,
            email=email,
        )
    oidc_roles = {
        str(who).strip().lower(): _roles(roles, f"[points_desk.oidc_roles] {who}")
        for who, roles in (desk.get("oidc_roles") or {}).items()
    }
    return AuthConfig(users=users, oidc_roles=oidc_roles)


def load_auth_config(path: Path | None = None) -> AuthConfig:
    """Accounts from the secrets file (``POINTS_DESK_SECRETS_FILE`` or ``.streamlit/``)."""
    path = path or secrets_file_path()
    if not path.is_file():
        return AuthConfig()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        # The decoder's message quotes only a position, never the content.
        raise ConfigError(f"the secrets file {path.name} is not valid TOML: {error}") from None
    return parse_auth_config(data)


# --- who must sign in ----------------------------------------------------------------------------


class Gate(StrEnum):
    OPEN = "open"  # sandbox on this computer, no accounts configured: no sign-in
    SIGN_IN = "sign_in"  # accounts or OIDC configured: everyone signs in
    UNCONFIGURED = "unconfigured"  # live mode with no way to sign in: refuse
    REMOTE_SANDBOX = "remote_sandbox"  # sandbox without accounts, opened from another machine


def gate(settings: Settings, config: AuthConfig, *, oidc: bool, local_client: bool) -> Gate:
    """What the dashboard must do before showing any page."""
    if oidc or config.has_local_users:
        return Gate.SIGN_IN
    if not settings.is_sandbox:
        return Gate.UNCONFIGURED
    return Gate.OPEN if local_client else Gate.REMOTE_SANDBOX


def is_local_address(address: str | None) -> bool:
    """A loopback client (or none known, as under AppTest)."""
    if not address:
        return True
    return address in ("::1", "localhost") or address.startswith(("127.", "::ffff:127."))


# --- local sign-in with lockout ------------------------------------------------------------------


@dataclass(frozen=True)
class SignInResult:
    person: Person | None
    message: str
    locked_until: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.person is not None


class SignInGuard:
    """Checks local passwords and keeps the attempts (hence the lockout) in the ledger DB.

    Every ``attempts``-th wrong password in a row (counted since the account's last successful
    sign-in, however far apart the tries are) locks the account for ``lockout_minutes``; after
    the lockout the count starts again from nothing.

    An attempt is counted *before* its password is checked: one write transaction, serialised
    per account across threads and processes (SQLite's write lock; a transaction-scoped advisory
    lock on PostgreSQL), reads whether the account is locked and either records the attempt as
    refused (``locked``) or reserves it as wrong (``bad``). Only then is the password checked,
    outside any transaction, and a right one turns its reserved row into ``ok``. So however many
    guesses arrive at once, at most ``attempts`` of them are ever checked before the lock holds.
    """

    def __init__(self, ledger: Ledger, config: AuthConfig, *, attempts: int, lockout_minutes: int):
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.ledger = ledger
        self.config = config
        self.attempts = attempts
        self.lockout = timedelta(minutes=lockout_minutes)
        # The key for unknown usernames: derived from the accounts' salted hashes, which the
        # ledger database never holds, so its records cannot be reversed into the typed names.
        material = "\x00".join(sorted(u.password_hash for u in config.users.values()))
        self._unknown_key = hashlib.sha256(
            b"points-desk unknown usernames\x00" + material.encode("utf-8")
        ).digest()

    @classmethod
    def from_settings(cls, ledger: Ledger, config: AuthConfig, settings: Settings) -> SignInGuard:
        return cls(
            ledger,
            config,
            attempts=settings.points_desk_sign_in_attempts,
            lockout_minutes=settings.points_desk_lockout_minutes,
        )

    def locked_until(self, username: str, now: datetime | None = None) -> datetime | None:
        """When the account unlocks, if a lockout is in force at ``now``: every
        ``attempts``-th wrong password in a row since the last right one, however far apart,
        locks it for ``lockout`` (the store counts them: ``SignInStore``)."""
        return self.ledger.sign_in_locked_until(
            username, now or datetime.now(UTC), attempts=self.attempts, lockout=self.lockout
        )

    def attempts_key(self, username: str) -> str:
        """Whose attempts a sign-in counts under: the account's username, or for a name with no
        account a keyed hash of it (so a password typed into the username box is never stored,
        yet a name no account has still runs into the same lockout as a real one)."""
        name = (username or "").strip().lower()
        if name in self.config.users:
            return name
        digest = hmac.new(self._unknown_key, name.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{UNKNOWN_USER}:{digest[:40]}"

    def sign_in(self, username: str, password: str, now: datetime | None = None) -> SignInResult:
        """Check a username and password; record the attempt; never log or keep the password.

        A name with no account gets exactly the answers a real account gets (wrong, then locked
        after the same number of tries) after the same Argon2 work, so neither the message nor
        the time taken says whether a username exists.
        """
        now = now or datetime.now(UTC)
        name = (username or "").strip().lower()
        user = self.config.users.get(name)
        key = self.attempts_key(name)
        who = name if user is not None else "an unknown username"
        attempt, until = self.ledger.reserve_sign_in(
            key, now, attempts=self.attempts, lockout=self.lockout
        )
        if until is not None:
            verify_password(password or "", _dummy())  # same work as a real check
            log.warning("sign-in refused for %s: locked", who)
            return SignInResult(None, _locked_message(until, now), until)
        assert attempt is not None
        stored = user.password_hash if user is not None else _dummy()
        if not verify_password(password or "", stored) or user is None:
            # The reserved row already says "bad".
            until = self.locked_until(key, now)
            log.warning("sign-in refused for %s: wrong username or password", who)
            if until is not None:
                return SignInResult(None, _locked_message(until, now), until)
            return SignInResult(None, "Wrong username or password.")
        self.ledger.mark_sign_in_ok(attempt)
        log.info("signed in: %s", name)
        return SignInResult(
            Person(
                id=name,
                display_name=user.display_name,
                roles=user.roles,
                method="local",
                email=user.email,
                credential=credential_of(user.password_hash),
            ),
            f"Signed in as {user.display_name}.",
        )


def _locked_message(until: datetime, now: datetime) -> str:
    minutes = max(1, int((until - now).total_seconds() + 59) // 60)
    return (
        f"Too many wrong passwords: this account is locked for {minutes} more "
        f"minute{'s' if minutes != 1 else ''}. Ask an administrator if you need in sooner."
    )


# --- command line --------------------------------------------------------------------------------

_USAGE = """usage: python -m services.auth hash-password [--stdin]

Prints an Argon2id hash for the secrets file, e.g.

  [points_desk.users.asha]
  name = "Asha Menon"
  roles = ["operator"]
  password_hash = "<the printed hash>"

The password is asked for twice without echo; with --stdin it is read from the first line of
standard input instead (for scripts)."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "hash-password" or any(a not in ("--stdin",) for a in args[1:]):
        print(_USAGE, file=sys.stderr)
        return 2
    if "--stdin" in args:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Same password again: ") != password:
            print("The two passwords differ; nothing was printed.", file=sys.stderr)
            return 1
    if len(password) < 12:
        print("Use at least 12 characters.", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
