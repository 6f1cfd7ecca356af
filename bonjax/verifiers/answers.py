"""Extracting the final answer from a model's reasoning text.

Priority, highest first: the last ``\\boxed{...}`` (nested braces allowed), the last
"The answer is ..." / "#### ..." line, the last number in the text.
"""

from __future__ import annotations

import re

from bonjax.data.boxed import last_boxed

_NUMBER = re.compile(r"[-+−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?")
_ANSWER_IS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|####)\s*:?\s*(.+)", re.IGNORECASE)


def answer_is_phrase(text: str) -> str | None:
  """Returns what follows the last "The answer is" or "####", up to the end of its line."""
  matches = list(_ANSWER_IS.finditer(text))
  if not matches:
    return None
  answer = matches[-1].group(1).strip()
  answer = answer.strip("$ ").rstrip(".")
  return answer.strip("$ ") or None


def _clean_number(token: str) -> str:
  return token.replace(",", "").replace("−", "-").lstrip("+")


def last_number(text: str) -> str | None:
  """Returns the last number (integer, decimal or a/b fraction) in ``text``, commas removed."""
  matches = _NUMBER.findall(text)
  return _clean_number(matches[-1]) if matches else None


def extract_answer(text: str) -> str | None:
  """Returns the final answer as a string: boxed, else "the answer is", else the last number."""
  for extractor in (last_boxed, answer_is_phrase, last_number):
    answer = extractor(text)
    if answer:
      return answer
  return None


def extract_integer(text: str) -> int | None:
  """Returns the final integer answer of ``text``, or None when there is none.

  The same priority as ``extract_answer``. A boxed answer must be a plain integer; after "The
  answer is" / "####" the last number counts ("The answer is 42." and "#### 1,024" give 42 and
  1024); otherwise the last number in the text. A final number that is not an integer (3.5, 1/2)
  gives None.
  """
  boxed = last_boxed(text)
  if boxed:  # A boxed answer must be a plain number: \boxed{\frac{1}{2}} is no integer.
    return _as_integer(boxed.strip("$ "))
  for span in (answer_is_phrase(text), text):
    numbers = _NUMBER.findall(span) if span else []
    if numbers:
      return _as_integer(numbers[-1])
  return None


def _as_integer(token: str) -> int | None:
  number = _clean_number(token)
  return int(number) if re.fullmatch(r"-?\d+", number) else None
