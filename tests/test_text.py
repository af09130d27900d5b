"""ui.text.md: whatever someone types shows as typed and forms no Markdown."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.markdown_support import hostile, problems, shown
from ui.text import code, md

TYPED = [
    hostile("REASON"),
    "[Verify here](https://evil.example)",
    "![](http://evil.example/t.png)",
    "https://evil.example www.evil.example WWW.EVIL.EXAMPLE pay@evil.example",
    "https&#58;//evil.example &#91;x&#93;(https&#58;//evil.example)",
    "<https://evil.example> <img src=x onerror=alert(1)> <!-- x -->",
    ":red[alarm] :material/warning: :smile: $x^2$ $$y$$ **b** _i_ ~~s~~ `c` ``d``",
    "# heading",
    "- item",
    "1. item",
    "2) item",
    "> quote",
    "---",
    "===",
    "| a | b |",
    "    indented",
    "line one\n\n# line two\n[x]: https://evil.example",
    "trailing backslash \\",
    "[x][y]\n\n[y]: https://evil.example",
]


@pytest.mark.parametrize("text", TYPED)
def test_typed_text_shows_as_typed_and_forms_no_markdown(text):
    for template in ("{}", "**Reason**  \n{}", "Asked by **{}** · today", ":red[{}]"):
        source = template.format(md(text))
        found = problems(source)
        if template.startswith(":red["):  # the page's own directive, around the text
            found = [problem for problem in found if not problem.startswith("directive")]
        assert found == []
        assert " ".join(text.split()) in shown(source)


def test_plain_words_numbers_and_colons_before_a_space_are_left_as_they_are():
    assert md("Diwali bonus, 1,500.50 points (Q3)") == "Diwali bonus, 1,500.50 points (Q3)"
    assert md("Missing column(s): kind") == "Missing column(s): kind"
    assert md(None) == ""


def test_code_spans_cannot_be_broken_out_of():
    assert code("EKC`[x](https://evil.example)`") == "`EKC'[x](https://evil.example)'`"
    assert not problems(f"Card {code('EKC` ![](http://evil.example/t.png) `')}")
    assert code(None) == code("") == "—"


MARKUP = [*"[]()!*_`~$<>:@#-+=|\\&;./ \n", "https://", "www.", "a@b.in", "&#58;", ":red"]
PIECES = st.sampled_from(MARKUP) | st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=4
)
TEXT = st.lists(PIECES, max_size=20).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_any_text_shows_as_typed(text):
    source = f"Reason: {md(text)}"
    assert problems(source) == []
    assert shown(source) == " ".join(f"Reason: {text}".split())
