"""The sandbox's JSON writer: every amount a number with exactly two decimals, whatever the
strings around it hold (the fast path must write exactly what the value-by-value one does)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sandbox.store import _to_json_slowly, to_json

MARKERISH = st.sampled_from(["\x00amount:1.00", 'a"\x00amount:12.34', "\\u0000amount:5.00", "₹ é"])
TEXT = st.one_of(st.text(max_size=12), MARKERISH)
AMOUNT = st.decimals(min_value=-(10**12), max_value=10**12, places=2, allow_nan=False)
SCALAR = st.one_of(TEXT, AMOUNT, st.integers(), st.booleans(), st.none())
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=25,
)


@given(VALUE)
def test_the_fast_writer_writes_what_the_value_by_value_one_does(value):
    text = to_json(value)
    assert text == _to_json_slowly(value)
    json.loads(text)  # and it is JSON


def test_amounts_are_numbers_with_two_decimals_and_strings_stay_strings():
    value = {"otbBalance": Decimal("146.3"), "firstName": "\x00amount:1.00", "n": [Decimal("-5")]}
    decoded = json.loads(to_json(value), parse_float=Decimal)
    assert decoded == {
        "otbBalance": Decimal("146.30"),
        "firstName": "\x00amount:1.00",
        "n": [Decimal("-5.00")],
    }
    assert '"otbBalance":146.30' in to_json(value)


def test_an_amount_that_is_not_finite_is_refused():
    with pytest.raises(ValueError):
        to_json({"a": Decimal("NaN")})
