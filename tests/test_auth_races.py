"""The sign-in lockout under a burst of guesses: however many arrive at once, from threads of one
dashboard or from several processes sharing the ledger (a SQLite file or PostgreSQL), at most
``POINTS_DESK_SIGN_IN_ATTEMPTS`` wrong passwords are ever checked before the lock holds."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from services import auth
from services.auth import SignInGuard, hash_password, parse_auth_config
from services.store import Ledger, sign_in_attempts
from tests.auth_support import PROJECT
from tests.pg_support import PG_URL, postgres_schema

ATTEMPTS = 5
RIGHT = "correct-horse-battery"
STORED = hash_password(RIGHT)


def accounts():
    return parse_auth_config(
        {
            "points_desk": {
                "users": {"asha": {"name": "Asha", "roles": ["operator"], "password_hash": STORED}}
            }
        }
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_ledger(request, tmp_path: Path) -> Iterator[tuple[Ledger, str, str | None]]:
    """``(ledger, url, schema)``: a ledger other processes can open too."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        ledger = Ledger(url)
        try:
            yield ledger, url, None
        finally:
            ledger.dispose()
        return
    with postgres_schema() as schema:
        ledger = Ledger(PG_URL, schema=schema)
        try:
            yield ledger, PG_URL, schema
        finally:
            ledger.dispose()


def outcomes(ledger: Ledger, username: str = "asha") -> list[str]:
    t = sign_in_attempts
    with ledger.reading() as conn:
        return list(
            conn.execute(sa.select(t.c.outcome).where(t.c.username == username).order_by(t.c.id))
            .scalars()
            .all()
        )


def count_checks(monkeypatch) -> list[str]:
    """The guesses checked against the account's own hash (a locked attempt checks a dummy)."""
    checked: list[str] = []
    real = auth.verify_password

    def verify(password: str, password_hash: str) -> bool:
        if password_hash == STORED:
            checked.append(password)
        return real(password, password_hash)

    monkeypatch.setattr(auth, "verify_password", verify)
    return checked


def at_once(count: int, attempt) -> list:
    """``attempt(i)`` in ``count`` threads released together; their answers in order."""
    answers: list = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait()
        answers[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


def test_forty_guesses_at_once_check_only_five_passwords_then_the_lock_holds(
    shared_ledger, monkeypatch
):
    ledger, _, _ = shared_ledger
    guard = SignInGuard(ledger, accounts(), attempts=ATTEMPTS, lockout_minutes=15)
    checked = count_checks(monkeypatch)

    answers = at_once(40, lambda i: guard.sign_in("asha", f"wrong-{i}"))

    assert len(checked) == ATTEMPTS, f"{len(checked)} wrong passwords were checked"
    assert sorted(outcomes(ledger)) == ["bad"] * ATTEMPTS + ["locked"] * (40 - ATTEMPTS)
    assert not any(answer.ok for answer in answers)
    # Each answer is "wrong" or, once the fifth wrong guess is in, "locked".
    wrong = [a for a in answers if a.message == "Wrong username or password."]
    assert len(wrong) <= ATTEMPTS - 1
    assert all("locked for 15 more minutes" in a.message for a in answers if a not in wrong)
    # The right password straight after the burst is refused unchecked: the lock holds.
    late = guard.sign_in("asha", RIGHT)
    assert not late.ok and "locked" in late.message
    assert len(checked) == ATTEMPTS


def test_an_unknown_username_locks_after_as_few_checks_under_a_burst(shared_ledger, monkeypatch):
    ledger, _, _ = shared_ledger
    guard = SignInGuard(ledger, accounts(), attempts=ATTEMPTS, lockout_minutes=15)
    dummy_checks: list[str] = []
    real = auth.verify_password

    def verify(password: str, password_hash: str) -> bool:
        dummy_checks.append(password)
        return real(password, password_hash)

    monkeypatch.setattr(auth, "verify_password", verify)
    answers = at_once(20, lambda i: guard.sign_in("no-such-person", f"guess-{i}"))
    assert not any(answer.ok for answer in answers)
    wrong_answers = [a for a in answers if a.message == "Wrong username or password."]
    assert len(wrong_answers) <= ATTEMPTS - 1
    key = guard.attempts_key("no-such-person")
    assert sorted(outcomes(ledger, key)) == ["bad"] * ATTEMPTS + ["locked"] * 15
    assert len(dummy_checks) == 20  # every answer still costs one Argon2 check


_CHILD = r"""
import json, os, sys, threading, time, logging
logging.disable(logging.WARNING)
sys.path.insert(0, sys.argv[1])
from services import auth
from services.store import Ledger

url, schema, stored, threads, ready, go = sys.argv[2:8]
ledger = Ledger(url, schema=schema or None)
config = auth.parse_auth_config({"points_desk": {"users": {"asha": {
    "name": "Asha", "roles": ["operator"], "password_hash": stored}}}})
guard = auth.SignInGuard(ledger, config, attempts=5, lockout_minutes=15)
checked = []
real = auth.verify_password

def verify(password, password_hash):
    if password_hash == stored:
        checked.append(password)
    return real(password, password_hash)

auth.verify_password = verify
count = int(threads)
barrier = threading.Barrier(count)
answers = [None] * count

def run(i):
    barrier.wait()
    answers[i] = guard.sign_in("asha", f"wrong-{os.getpid()}-{i}").message

open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
workers = [threading.Thread(target=run, args=(i,)) for i in range(count)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
ledger.dispose()
print(json.dumps({"checked": len(checked), "answers": answers}))
"""


def test_guesses_from_several_processes_sharing_the_ledger_check_only_five(
    shared_ledger, tmp_path: Path
):
    ledger, url, schema = shared_ledger
    processes, threads = 3, 8
    go = tmp_path / "go"
    children = []
    for n in range(processes):
        ready = tmp_path / f"ready-{n}"
        args = [str(PROJECT), url, schema or "", STORED, str(threads), str(ready), str(go)]
        children.append(
            (
                ready,
                subprocess.Popen(
                    [sys.executable, "-c", _CHILD, *args],
                    cwd=PROJECT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready, _ in children):
        assert all(child.poll() is None for _, child in children), "a guessing process died"
        assert time.monotonic() < deadline, "the guessing processes did not start"
        time.sleep(0.01)
    go.touch()  # every process releases its guesses at once
    reports = []
    for _, child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    assert sum(report["checked"] for report in reports) == ATTEMPTS
    total = processes * threads
    assert sorted(outcomes(ledger)) == ["bad"] * ATTEMPTS + ["locked"] * (total - ATTEMPTS)
    answers = [answer for report in reports for answer in report["answers"]]
    assert answers.count("Wrong username or password.") <= ATTEMPTS - 1
    assert all(a == "Wrong username or password." or "locked" in a for a in answers)
    guard = SignInGuard(ledger, accounts(), attempts=ATTEMPTS, lockout_minutes=15)
    assert guard.locked_until("asha", datetime.now(UTC)) is not None
