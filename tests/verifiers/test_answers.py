"""Final-answer extraction."""

import pytest

from bonjax.verifiers import answers


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{\frac{1}{2}} done", r"\frac{1}{2}"),
    (r"\boxed{1} then \boxed{\sqrt{\frac{a}{b}}}", r"\sqrt{\frac{a}{b}}"),
    (r"\fbox{7}", "7"),
    (r"\boxed 5$", "5"),
    (r"\boxed{1", None),
    ("no box", None),
])
def test_last_boxed(text, expected):
  assert answers.last_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The answer is 42.", 42),
    ("Step 1: 3 + 4 = 7\n#### 1,024", 1024),
    (r"so it is \boxed{12} and then 13", 12),
    (r"\boxed{$-3$}", -3),
    ("The final answer is: -5 apples", -5),
    ("first 3 then 4", 4),
    (r"\boxed{\frac{1}{2}}", None),
    ("x = 3.5", None),
    ("nothing here", None),
])
def test_extract_integer(text, expected):
  assert answers.extract_integer(text) == expected


@pytest.mark.parametrize("text, expected", [
    (r"Thus \boxed{\dfrac{3}{4}}.", r"\dfrac{3}{4}"),
    (r"The answer is $\frac{1}{2}$.", r"\frac{1}{2}"),
    ("we get 0.25 and finally 1/3", "1/3"),
    ("nothing", None),
])
def test_extract_answer(text, expected):
  assert answers.extract_answer(text) == expected
