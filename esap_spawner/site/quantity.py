"""Kubernetes resource quantities ("500m", "4Gi", "1.5G", "2e3") as exact numbers.

One parser for the whole package: the site file validator, the cluster model and the
simulator's scheduler all read quantities through :func:`parse_quantity`, so they agree
on what "4G" means. Values are :class:`~decimal.Decimal` so that sums of many pods do
not drift; callers convert to ``float`` or ``int`` at their edge.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_quantity(value: str | int | float) -> Decimal:
    """Return the exact value of a Kubernetes quantity.

    >>> parse_quantity("500m")
    Decimal('0.500')
    >>> parse_quantity("4Gi") == 4 * 2**30
    True
    >>> parse_quantity("4G") == 4 * 10**9
    True

    Raises :class:`QuantityError` for anything else (``"4 GB"``, ``"four"``, ``""``, a bool).
    """
    if isinstance(value, bool):
        raise QuantityError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        try:
            return Decimal(str(value))
        except InvalidOperation as exc:  # nan, inf
            raise QuantityError(f"not a quantity: {value!r}") from exc
    if not isinstance(value, str):
        raise QuantityError(f"not a quantity: {value!r}")
    match = _QUANTITY.match(value.strip())
    if match is None or value != value.strip():
        raise QuantityError(
            f"not a quantity: {value!r} (expected a number with an optional suffix such as "
            "'500m', '2', '4G' or '4Gi')"
        )
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * (Decimal(10) ** int(suffix[1:]))


def parse_cpu(value: str | int | float) -> Decimal:
    """CPU cores from a quantity ("500m" -> 0.5)."""
    return parse_quantity(value)


def parse_bytes(value: str | int | float) -> int:
    """Bytes from a memory quantity, rounded up to a whole byte ("1.5Ki" -> 1536)."""
    exact = parse_quantity(value)
    whole = int(exact)
    return whole if whole == exact else whole + (1 if exact > 0 else 0)


def format_bytes(n: int | float) -> str:
    """Human-readable bytes in decimal units, as users read disk sizes: ``1.2 GB``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
