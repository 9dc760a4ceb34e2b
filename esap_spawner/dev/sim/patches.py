"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

Strategic merge patch is approximated the way it behaves for the core/v1 fields our clients
touch: lists of objects that carry a ``name`` (containers, env, volumes, ports with names)
or a ``type`` (conditions) are merged item by item on that key; other lists are replaced.
``{"$patch": "delete"}`` directives are not supported. Errors raise :class:`PatchError`.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PatchError", "apply_patch"]

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class PatchError(ValueError):
    """A patch that cannot be applied (the API answers 422, or 415 for a bad content type)."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def _merge(target: Any, patch: Any, *, strategic: bool) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif strategic and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value)
        else:
            result[key] = _merge(result.get(key), value, strategic=strategic)
    return result


def _merge_key(items: list[Any]) -> str | None:
    for key in ("name", "type"):
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def _merge_list(current: list[Any], patch: list[Any]) -> list[Any]:
    key = _merge_key(patch)
    if key is None or _merge_key(current) not in (key, None):
        return copy.deepcopy(patch)
    merged = [copy.deepcopy(item) for item in current]
    index = {item[key]: n for n, item in enumerate(merged)}
    for item in patch:
        if item[key] in index:
            n = index[item[key]]
            merged[n] = _merge(merged[n], item, strategic=True)
        else:
            merged.append(copy.deepcopy(item))
    return merged


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}: must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return doc


def _index(container: list[Any], part: str, path: str, *, adding: bool) -> int:
    if adding and part == "-":
        return len(container)
    if not part.isdigit():
        raise PatchError(f"invalid array index {part!r} in {path!r}")
    n = int(part)
    if n > len(container) or (not adding and n == len(container)):
        raise PatchError(f"array index {n} out of range in {path!r}")
    return n


def _json_patch(doc: Any, operations: list[Any]) -> Any:
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation {op!r}")
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if kind in ("move", "copy"):
            value = copy.deepcopy(_walk(doc, _pointer(op.get("from", "")), op.get("from", "")))
            if kind == "move":
                doc = _json_patch(doc, [{"op": "remove", "path": op["from"]}])
            kind, op = "add", {"value": value}
        if kind == "test":
            if _walk(doc, parts, path) != op.get("value"):
                raise PatchError(f"test operation failed at {path!r}")
            continue
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op.get("value"))
                continue
            raise PatchError(f"cannot {kind} the whole document")
        parent = _walk(doc, parts[:-1], path)
        last = parts[-1]
        if kind not in ("add", "remove", "replace"):
            raise PatchError(f"unknown JSON patch op {kind!r}")
        if "value" not in op and kind != "remove":
            raise PatchError(f"JSON patch op {kind!r} at {path!r} needs a value")
        if isinstance(parent, dict):
            if kind != "add" and last not in parent:
                raise PatchError(f"path {path!r} does not exist")
            if kind == "remove":
                del parent[last]
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif isinstance(parent, list):
            n = _index(parent, last, path, adding=kind == "add")
            if kind == "add":
                parent.insert(n, copy.deepcopy(op["value"]))
            elif kind == "remove":
                del parent[n]
            else:
                parent[n] = copy.deepcopy(op["value"])
        else:
            raise PatchError(f"path {path!r} does not point into an object or array")
    return doc


def apply_patch(obj: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """Return a patched copy of ``obj``; ``obj`` itself is not changed."""
    media = content_type.split(";")[0].strip().lower()
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise PatchError("a JSON patch must be a list of operations")
        result = _json_patch(obj, patch)
    elif media in (MERGE, STRATEGIC):
        if not isinstance(patch, dict):
            raise PatchError("a merge patch must be a JSON object")
        result = _merge(copy.deepcopy(obj), patch, strategic=media == STRATEGIC)
    else:
        raise PatchError(f"unsupported patch content type {content_type!r}", code=415)
    if not isinstance(result, dict):
        raise PatchError("the patched object is not a JSON object")
    return result
