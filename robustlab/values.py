"""Numbers written as text: the one parser for values such as ``8/255``, ``0.3`` or ``1e-3``.

One job: turn a number or a string (a decimal, scientific notation or a fraction) into a float.
Callers wrap :class:`ValueError` in their own error naming the key or option; the config
(``parse_float``), eps on the command line (``robustlab.attacks.threat.parse_eps``) and analysis
options all go through :func:`parse_number`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["parse_number", "looks_numeric"]

_NUM = r"[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?"
_FRACTION = re.compile(rf"^\s*{_NUM}\s*/\s*{_NUM}\s*$")
_SCI = re.compile(r"^\s*[-+]?[0-9]*\.?[0-9]+[eE][-+]?[0-9]+\s*$")  # YAML 1.1 reads 1e-3 as text


def parse_number(value: Any) -> float:
    """A float from a number or a string such as ``"0.3"``, ``"1e-3"`` or ``"8/255"``.

    Raises :class:`ValueError` for anything else (booleans, other text, a zero denominator).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        try:
            if _FRACTION.match(s):
                num, den = s.split("/")
                return float(num) / float(den)
            return float(s)
        except (ValueError, ZeroDivisionError):
            pass
    raise ValueError(f"expected a number (e.g. 0.3 or 8/255), got {value!r}")


def looks_numeric(text: str) -> bool:
    """True for a fraction or scientific notation (strings YAML leaves as text)."""
    return bool(_FRACTION.match(text) or _SCI.match(text))
