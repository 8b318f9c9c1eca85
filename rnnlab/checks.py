"""Value checks shared by every module that validates user input (configs, sizes, options).

Each raises ValueError with one sentence naming the field, what is valid and what it got.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable


def check_int(name: str, value: Any, low: int = 1, high: int | None = None,
              why: str = "") -> int:
  """``value`` as an int if it is an integer in [low, high] (NumPy integers count; bools do not).

  ``why`` is appended to the rule in the message, e.g. " (the delay T)".
  """
  if (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low
      and (high is None or value <= high)):
    return int(value)
  valid = f">= {low}" if high is None else f"in [{low}, {high}]"
  raise ValueError(f"{name} must be an integer {valid}{why}; got {value!r}.")


def check_choice(name: str, value: Any, valid: Iterable) -> Any:
  """``value`` if it is one of ``valid``; else a message listing them."""
  valid = list(valid)
  if value not in valid:
    raise ValueError(f"Unknown {name} {value!r}. Valid: {', '.join(map(str, valid))}.")
  return value
