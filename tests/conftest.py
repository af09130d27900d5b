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


@pytest.fixture
def app(desk_env: Path):
    """An ``AppTest`` of the real app (navigation, sidebar) on the isolated Desk."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app_desk(app):
    """The Desk the app under test is using (same process, same cache)."""
    from ui.context import _desk

    return _desk()
