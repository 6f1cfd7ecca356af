"""The last ``\\boxed{...}`` of a LaTeX text: MATH's answer convention.

One implementation for both sides of it: the MATH dataset builder reads reference answers with it
and the answer verifiers read model answers with it.
"""

from __future__ import annotations

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
  """Returns the contents of the last ``\\boxed{...}`` or ``\\fbox{...}``, braces balanced.

  ``\\boxed 5`` (no braces, a single token) is accepted too. Unbalanced braces give None.
  """
  start, command = max((text.rfind(cmd), cmd) for cmd in _BOX_COMMANDS)
  if start < 0:
    return None
  rest = text[start + len(command):]
  if rest.startswith(" ") and not rest.lstrip().startswith("{"):
    token = rest.split()
    return token[0].rstrip("$.") if token else None
  rest = rest.lstrip()
  if not rest.startswith("{"):
    return None
  depth = 0
  for i, char in enumerate(rest):
    if char == "{":
      depth += 1
    elif char == "}":
      depth -= 1
      if depth == 0:
        return rest[1:i].strip()
  return None
