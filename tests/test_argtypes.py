"""proto.argtypes: the one strict parser of numbers typed by an operator or sent by a peer (parse_uint)."""

from __future__ import annotations

import argparse

import pytest

from proto.argtypes import OutOfRange, non_negative_int, parse_uint, port, positive_int

#: forms int() reads that are not a plain decimal number (tester F6: `?since=%D9%A3` answered for version 3)
LENIENT = ["-1", "+5", " 5", "5 ", "1_0", "\u0663", "\uff11", "\u00b2", "0x1", "", "1.0", "1e3"]


@pytest.mark.parametrize("text", LENIENT)
def test_parse_uint_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match=r"^since: expected a whole number written with digits 0-9"):
        parse_uint(text, "since", 100)


def test_parse_uint_range_and_bounded_echo() -> None:
    assert parse_uint("0", "n", 5) == 0 and parse_uint("005", "n", 5) == 5
    with pytest.raises(OutOfRange, match=r"^n: '6' is above the maximum 5$"):
        parse_uint("6", "n", 5)
    with pytest.raises(OutOfRange) as e:          # int() itself raises past 4300 digits: never called
        parse_uint("9" * 100_000, "n", 5)
    assert len(str(e.value)) < 120 and "(100000 characters)" in str(e.value)
    with pytest.raises(ValueError) as e2:
        parse_uint("x" * 100_000, "n", 5)
    assert len(str(e2.value)) < 150


@pytest.mark.parametrize("parse", [positive_int, non_negative_int, port])
@pytest.mark.parametrize("text", ["+5", " 5", "1_0", "\u0663", "\uff11", "9" * 5000])
def test_option_integers_are_plain_decimal(parse: object, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an integer"):
        parse(text)  # type: ignore[operator]


def test_option_integers_still_name_a_negative_value() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="-1: must be 0 or more"):
        non_negative_int("-1")
    assert positive_int("7") == 7 and port("65535") == 65535
