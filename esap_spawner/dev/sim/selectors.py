"""Label and field selectors as the API server parses them from query strings.

``parse_label_selector("app=hub,tier!=web,env in (a, b),!gpu")`` and
``parse_field_selector("involvedObject.kind=Pod,status.phase!=Failed")`` return matcher
objects with a ``matches(obj)`` method over API objects as dicts. Bad input raises
:class:`SelectorError`, which the API server answers with 400 BadRequest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "SelectorError",
    "field_value",
    "parse_field_selector",
    "parse_label_selector",
]


class SelectorError(ValueError):
    """A selector string the API server cannot parse."""


@dataclass(frozen=True)
class _Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label, as Kubernetes does.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    """A parsed ``labelSelector``: every requirement must hold."""

    requirements: tuple[_Requirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        if not self.requirements:
            return True
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


_SET_TERM = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in selector {selector!r}")
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise SelectorError(f"unbalanced parentheses in selector {selector!r}")
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def parse_label_selector(selector: str | None) -> LabelSelector:
    """Parse a label selector (equality, ``!=``, ``in``, ``notin``, exists, ``!key``)."""
    if not selector or not selector.strip():
        return LabelSelector()
    requirements = []
    for term in _split_terms(selector):
        if match := _SET_TERM.match(term):
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(_Requirement(match["key"], match["op"], values))
        elif match := _EQ_TERM.match(term):
            op = "!=" if match["op"] == "!=" else "="
            requirements.append(_Requirement(match["key"], op, frozenset([match["value"]])))
        elif match := _EXISTS_TERM.match(term):
            op = "!" if match["neg"] else "exists"
            requirements.append(_Requirement(match["key"], op))
        else:
            raise SelectorError(f"unable to parse requirement {term.strip()!r} in {selector!r}")
    return LabelSelector(tuple(requirements))


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string value at a dotted path, ``""`` when absent (as field selectors read it)."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


@dataclass(frozen=True)
class FieldSelector:
    """A parsed ``fieldSelector``: ``path=value`` / ``path!=value`` terms, all must hold."""

    terms: tuple[tuple[str, bool, str], ...] = ()  # (path, equal?, value)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, path) == value) is equal for path, equal, value in self.terms)

    def equality(self, path: str) -> str | None:
        """The value this selector pins ``path`` to, if it does (for index look-ups)."""
        for term_path, equal, value in self.terms:
            if term_path == path and equal:
                return value
        return None

    def __bool__(self) -> bool:
        return bool(self.terms)


_FIELD_TERM = re.compile(r"^\s*(?P<path>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*$")


def parse_field_selector(selector: str | None) -> FieldSelector:
    """Parse a field selector such as ``involvedObject.kind=Pod,metadata.name!=x``."""
    if not selector or not selector.strip():
        return FieldSelector()
    terms = []
    for term in selector.split(","):
        if not term.strip():
            continue
        match = _FIELD_TERM.match(term)
        if match is None:
            raise SelectorError(f"invalid field selector term {term.strip()!r} in {selector!r}")
        terms.append((match["path"], match["op"] != "!=", match["value"]))
    return FieldSelector(tuple(terms))
