"""ivr/values.py: what may go back to the PBX (AMI actions, AGI commands)."""

from __future__ import annotations

import pytest

from ivr.values import BadValue, app_word, dial_number, uniqueid, variable_value


@pytest.mark.parametrize(("raw", "number"), [
    ("13800138000", "13800138000"), ("１３８００１３８０００", "13800138000"),
    ("＋８６１３８００１３８０００", "+8613800138000"), (" 02512345678 ", "02512345678"),
])
def test_numbers_are_ascii_digits(raw: str, number: str) -> None:
    assert dial_number(raw) == number


@pytest.mark.parametrize("raw", ["١٣٨٠٠١٣٨٠٠٠", "۱۳۸", "¹³⁸", "①", "१३८", "138-0013", "138 0013",
                                 "138,1", "138\r\n1", "", "+", "1" * 25, "unknown", "s"])
def test_anything_else_is_refused(raw: str) -> None:
    with pytest.raises(BadValue):
        dial_number(raw)


def test_uniqueids_variables_and_words() -> None:
    assert uniqueid("1700000000.26") == "1700000000.26"
    assert uniqueid("pbx1-1700000000.26") == "pbx1-1700000000.26"
    for bad in ("1700000000.26,X=1", "1700000000.26\r", "", "abc"):
        with pytest.raises(BadValue):
            uniqueid(bad)
    assert variable_value("城管 12345") == "城管 12345"
    for bad in ("a,b", "a\rb", "a\nb", 'a"b', "a|b", "a\\b", "x" * 81, "\x00"):
        with pytest.raises(BadValue):
            variable_value(bad)
    assert app_word("hotline-en") == "hotline-en"
    for bad in ("hotline,t", "q\r", "", "队列"):
        with pytest.raises(BadValue):
            app_word(bad)
