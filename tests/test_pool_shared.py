"""A new session opens without asking EnKash for the pool again: the company's pool balance is
looked up once for every session, and again as soon as points move."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import PROJECT


def _new_session() -> AppTest:
    at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


def _pool_lookups(app_desk, monkeypatch) -> list[int]:
    store = app_desk.sandbox.store
    calls = []
    summary = store.account_summary

    def counted(*args, **kwargs):
        calls.append(1)
        return summary(*args, **kwargs)

    monkeypatch.setattr(store, "account_summary", counted)
    return calls


def test_new_sessions_share_one_pool_lookup_until_points_move(app, app_desk, monkeypatch):
    calls = _pool_lookups(app_desk, monkeypatch)
    for _ in range(3):
        at = _new_session()
        pools = [m.value for m in at.metric if m.label == "Pool balance"]
        assert pools == ["1,00,00,000.00", "1,00,00,000.00"]  # the page's and the sidebar's
    assert calls == []  # the first session's look-up served them all

    from ui.sidebar import forget_pool

    forget_pool()  # what every page that moves points calls
    _new_session()
    assert len(calls) == 1


def test_with_the_cache_off_every_session_asks(desk_env, monkeypatch):
    monkeypatch.setenv("POINTS_DESK_POOL_CACHE_SECONDS", "0")
    _new_session()
    from ui.context import _desk

    calls = _pool_lookups(_desk(), monkeypatch)
    _new_session()
    assert len(calls) >= 1


def test_sessions_that_need_the_pool_at_once_share_one_lookup(app, app_desk, monkeypatch):
    """After points move, every open session redraws its pool: they ask EnKash once between
    them (each waits for the one look-up in flight), not once each."""
    import threading

    from ui import sidebar

    calls = _pool_lookups(app_desk, monkeypatch)
    app_desk.sandbox.knobs.latency_ms = 200  # a look-up takes a while, as EnKash's does
    sidebar.forget_pool()
    answers: list = []
    threads = [
        threading.Thread(target=lambda: answers.append(sidebar.pool_details())) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 8 and all(a is not None for a in answers)
    assert len({a.available_balance for a in answers}) == 1
    assert len(calls) == 1
    # Asking afresh (the sidebar's refresh button) still asks EnKash.
    sidebar.pool_details(fresh=True)
    assert len(calls) == 2
