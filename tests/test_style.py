"""pdeeos.book.style's table formatting: a number is never broken across lines in a rendered table."""

import math

import pandas as pd

from pdeeos.book import style


def test_exponents_get_a_minus_sign_and_other_values_stay():
    assert style.number(7.3671e-06) == "7.367e\u221206"
    assert style.number(12.3456) == "12.35" and style.number(1.5e20) == "1.5e+20"
    assert style.number(3) == 3 and style.number("x") == "x"
    assert math.isnan(style.number(float("nan")))


def test_a_table_formats_every_float_and_keeps_its_labels():
    frame = pd.DataFrame({"a": [1e-5, 0.5], "b": ["x", "y"]}, index=["p", "q"])
    shown = style.table(frame, digits=2)
    assert shown.loc["p", "a"] == "1e\u221205" and shown.loc["q", "a"] == "0.5"
    assert list(shown["b"]) == ["x", "y"] and list(shown.index) == ["p", "q"]
    assert frame.loc["p", "a"] == 1e-5   # the original is untouched


def test_negative_exponents_in_text_get_a_minus_sign_and_hyphens_stay():
    text = "4e-05 and 2.5e-12, x-1, global-cfl, 1e+20"
    assert style.minus_in_exponents(text) == "4e\u221205 and 2.5e\u221212, x-1, global-cfl, 1e+20"
