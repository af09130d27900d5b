"""Shared fixtures: an isolated Points Desk (own data dir, embedded sandbox) for page tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


def _isolate_env(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("ENKASH_", "POINTS_DESK_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POINTS_DESK_DATA_DIR", str(data_dir))
    monkeypatch.setenv("POINTS_DESK_SECRETS_FILE", str(data_dir / "no-secrets.toml"))


@pytest.fixture
def desk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings pointing at a fresh data dir; the app's cached Desk is rebuilt and closed after."""
    import streamlit as st

    _isolate_env(monkeypatch, tmp_path)
    st.cache_resource.clear()
    yield tmp_path
    from ui.context import _desk

    try:
        _desk().close()
    finally:
        st.cache_resource.clear()


def run_app(**state):
    """An ``AppTest`` of the real app (navigation, sidebar) after its first run, with ``state``
    in its session state before that run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=30)
    for name, value in state.items():
        at.session_state[name] = value
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app(desk_env: Path):
    """An ``AppTest`` of the real app (navigation, sidebar) on the isolated Desk."""
    return run_app()


def app_with_search(**state):
    """An ``AppTest`` of the real app as a browser shows it 2 s after a session's first look at
    the Overview (the first-paint timer's run): its charts and the sidebar's search box drawn
    (ui/first_paint.py). AppTest runs app.py, and so the sidebar, on its first run only."""
    return run_app(_first_paint_done={"overview"}, **state)


def assert_summaries_agree(ledger) -> None:
    """The daily totals and card tables equal what the rows say (checked after each test that
    moved points through the store, whatever path it took)."""
    assert ledger.summary_differences() == []


@pytest.fixture
def app_desk(app):
    """The Desk the app under test is using (same process, same cache)."""
    from ui.context import _desk

    the_desk = _desk()
    yield the_desk
    assert_summaries_agree(the_desk.ledger)


# --- the sandbox over loopback, for service and fault tests -------------------------------------


@pytest.fixture(autouse=True)
def _forget_login_refusals():
    """A refused EnKash sign-in blocks the process's clients; no test inherits another's."""
    from services import enkash

    yield
    enkash._REFUSED_LOGINS.clear()


@pytest.fixture
def sandbox():
    """A fresh embedded sandbox on a loopback port, every fault knob off."""
    from services.sandbox import start_sandbox
    from tests.fault_support import reset_knobs

    server = start_sandbox()
    reset_knobs(server)
    yield server
    server.stop()
    server.store.close()


@pytest.fixture
def ledger(tmp_path: Path):
    """A ledger in a real SQLite file (modules that also run PostgreSQL define their own)."""
    from services.store import Ledger

    the_ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield the_ledger
    try:
        assert_summaries_agree(the_ledger)
    finally:
        the_ledger.dispose()


@pytest.fixture
def client(sandbox):
    """An EnKash client for ``sandbox`` with a short read timeout."""
    from tests.fault_support import client_for

    with client_for(sandbox, timeout=0.5) as the_client:
        yield the_client
