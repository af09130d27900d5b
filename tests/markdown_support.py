"""Checks that text people or EnKash supplied reached the page as text, never as Markdown.

Streamlit renders labels, captions, alerts and Markdown bodies with react-markdown, remark-gfm,
remark-math and remark-directive. The parse here is markdown-it-py (CommonMark + GFM tables and
strikethrough), plus what markdown-it does not do the way Streamlit's renderer does:

* remark-gfm links bare URLs and email addresses found in the parsed text, after backslash
  escapes are resolved (``_URL`` and ``_EMAIL`` are its two patterns, with its rule for the
  character before a match);
* ``$...$`` maths and ``:name[...]`` directives, spotted in the source when not escaped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator

from markdown_it import MarkdownIt

_PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE | re.ASCII)
_EMAIL = re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.ASCII)
_UNESCAPED = r"(?<!\\)(?:\\\\)*"
_MATH = re.compile(_UNESCAPED + r"\$")
_DIRECTIVE = re.compile(_UNESCAPED + r":[A-Za-z]")
_CODE_SPAN = re.compile(_UNESCAPED + r"(`+)(?!`).*?(?<!`)\1(?!`)")
_JOINER = "\u2060"
# Strings of an element's proto that Streamlit renders as Markdown.
_MARKDOWN_FIELDS = {"body", "label", "help", "text", "title", "delta"}
# Elements whose body is shown as plain text.
_PLAIN_ELEMENTS = {"text", "code"}


def hostile(marker: str) -> str:
    """Text with a live link, a tracking image, emphasis, a colour directive, maths, HTML and
    a bare URL in it; ``marker`` says which field it was typed into (at most 200 characters)."""
    return (
        f"{marker} [Verify here](https://evil.example/{marker}) ![](http://evil.example/t.png) "
        f"**{marker}** :violet[x] $x^2$ <b>y</b> www.evil.example x@evil.example `c` ~~s~~"
    )


def markdown_strings(at) -> Iterator[str]:
    """Every string of the last run that Streamlit would render as Markdown (main and sidebar;
    dataframes and select options are plain text and are not included; a static table's cells,
    headers and index are Markdown)."""
    for node in at._tree:
        if getattr(node, "type", None) in _PLAIN_ELEMENTS:
            continue  # st.text and st.code show their text as typed: no Markdown is rendered
        if getattr(node, "type", None) == "table":
            yield from _table_strings(node.value)
            continue
        proto = getattr(node, "proto", None)
        if proto is not None and hasattr(proto, "ListFields"):
            yield from _strings(proto)


def _table_strings(frame) -> Iterator[str]:
    """Every cell, column header and index label of an ``st.table`` (each rendered as Markdown)."""
    for labels in (frame.columns, frame.index):
        yield from (str(label) for label in labels)
    for row in frame.itertuples(index=False):
        yield from (str(cell) for cell in row)


def _strings(message) -> Iterator[str]:
    for field, value in message.ListFields():
        repeated = isinstance(value, Iterable) and not isinstance(value, str | bytes)
        items = value if repeated and not hasattr(value, "ListFields") else [value]
        for item in items:
            if hasattr(item, "ListFields"):
                yield from _strings(item)
            elif isinstance(item, str) and field.name in _MARKDOWN_FIELDS:
                yield item


def _shown_text(tokens) -> tuple[str, list[str]]:
    """The text a reader sees, and each run of plain text (what remark-gfm searches for URLs)."""
    shown, runs, run = [], [], []
    for token in tokens:
        if token.children:
            inner, inner_runs = _shown_text(token.children)
            shown.append(inner)
            runs.extend(inner_runs)
            continue
        if token.type == "text":
            run.append(token.content)
            shown.append(token.content)
            continue
        if run:
            runs.append("".join(run))
            run = []
        if token.type == "code_inline":
            shown.append(token.content)
        elif token.type in ("softbreak", "hardbreak"):
            shown.append(" ")
    if run:
        runs.append("".join(run))
    return "".join(shown).replace(_JOINER, ""), runs


def shown(source: str) -> str:
    """The text a reader sees when ``source`` is rendered."""
    return _shown_text(_PARSER.parse(source))[0]


def _autolinks(run: str) -> list[str]:
    found = []
    for pattern, email in ((_URL, False), (_EMAIL, True)):
        for match in pattern.finditer(run):
            before = run[match.start() - 1] if match.start() else ""
            if (
                not before
                or before.isspace()
                or (unicodedata.category(before)[0] in "PS" and not (email and before == "/"))
            ):
                found.append(match.group(0))
    return found


def problems(source: str, markers: Iterable[str] = ()) -> list[str]:
    """What in ``source`` Streamlit would turn into a link, an image, HTML, maths or a directive,
    and each hostile text (by marker) present in the source but not shown literally."""
    found = []
    tokens = _PARSER.parse(source)
    for token in tokens:
        for child in [token, *(token.children or [])]:
            if child.type in ("link_open", "image"):
                found.append(f"{child.type} {child.attrGet('href') or child.attrGet('src')}")
            elif child.type.startswith("html"):
                found.append(f"html {child.content!r}")
    shown, runs = _shown_text(tokens)
    found += [f"autolink {link}" for run in runs for link in _autolinks(run)]
    outside_code = _CODE_SPAN.sub("", source)
    found += [f"maths in {source!r}" for _ in _MATH.finditer(outside_code)]
    found += [f"directive in {source!r}" for _ in _DIRECTIVE.finditer(outside_code)]
    for marker in markers:
        if marker in source:
            typed = " ".join(hostile(marker).split())
            if typed not in shown and typed.replace("`", "'") not in shown:
                found.append(f"{marker} not shown as typed")
    return found
