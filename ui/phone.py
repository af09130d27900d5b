"""What a 390 px phone needs beyond Streamlit's own responsive layout."""

from __future__ import annotations

import json

import streamlit as st

# Streamlit closes the sidebar after a page is chosen only when the browser's user agent says
# "mobile"; a narrow desktop window or a phone browser asking for the desktop site keeps it
# open over three quarters of the screen. Below Streamlit's overlay breakpoint (768 px), this
# closes it once per page change. It is constant text (the page key is JSON-quoted), so nothing
# supplied by a user ever reaches the script.
_CLOSE_SIDEBAR = """<script>
(() => {{
  const page = {page};
  if (!window.matchMedia("(max-width: 768px)").matches) return;
  const doc = window.parent ? window.parent.document : document;
  const sidebar = doc.querySelector('[data-testid="stSidebar"]');
  const close = doc.querySelector('[data-testid="stSidebarCollapseButton"] button');
  if (page && sidebar && close && sidebar.getBoundingClientRect().width > 0) close.click();
}})();
</script>"""


def close_sidebar_after_navigation(page_key: str) -> None:
    """On a narrow screen, close the sidebar once after the person opened another page."""
    if st.session_state.get("_phone_last_page") == page_key:
        return
    first = "_phone_last_page" not in st.session_state
    st.session_state["_phone_last_page"] = page_key
    if first:  # a fresh session starts with the sidebar closed on a phone already
        return
    with st.sidebar:
        st.html(_CLOSE_SIDEBAR.format(page=json.dumps(page_key)), unsafe_allow_javascript=True)


_SCROLL_TO = """<script>
(() => {{
  const target = {selector};
  const doc = window.parent ? window.parent.document : document;
  const element = doc.querySelector(target);
  if (!element) return;
  element.style.scrollMarginTop = "4.5rem";  // below Streamlit's header bar
  element.scrollIntoView({{block: "start", behavior: "instant"}});
}})();
</script>"""


def bring_into_view(key: str, token: str) -> None:
    """Once per ``token`` (e.g. a transaction's reference), scroll the keyed container
    (``st.container(key=key)``) to the top of the screen: after a submit far down a phone's
    page, what happened must be the first thing seen, not the greyed-out form."""
    shown = st.session_state.setdefault("_phone_shown", set())
    if (key, token) in shown:
        return
    shown.add((key, token))
    st.html(_SCROLL_TO.format(selector=json.dumps(f".st-key-{key}")), unsafe_allow_javascript=True)
