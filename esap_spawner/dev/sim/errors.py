"""API errors and the ``Status`` objects the API server answers them with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["ApiError"]


class ApiError(Exception):
    """An error the API server reports as a ``Status`` with an HTTP code and a reason."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body

    @classmethod
    def not_found(cls, resource: str, name: str) -> ApiError:
        return cls(
            404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource}
        )

    @classmethod
    def not_found_resource(cls, resource: str) -> ApiError:
        return cls(
            404, "NotFound", f"the server could not find the requested resource ({resource})"
        )

    @classmethod
    def already_exists(cls, resource: str, name: str) -> ApiError:
        return cls(
            409,
            "AlreadyExists",
            f'{resource} "{name}" already exists',
            {"name": name, "kind": resource},
        )

    @classmethod
    def conflict(cls, resource: str, name: str) -> ApiError:
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            {"name": name, "kind": resource},
        )

    @classmethod
    def invalid(cls, kind: str, name: str, causes: Sequence[tuple[str, str]]) -> ApiError:
        text = ", ".join(f"{field}: {message}" for field, message in causes)
        return cls(
            422,
            "Invalid",
            f'{kind} "{name}" is invalid: {text}',
            {
                "name": name,
                "kind": kind,
                "causes": [
                    {"reason": "FieldValueInvalid", "message": message, "field": field}
                    for field, message in causes
                ],
            },
        )

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def forbidden(cls, message: str) -> ApiError:
        return cls(403, "Forbidden", message)

    @classmethod
    def gone(cls, requested: int, oldest: int) -> ApiError:
        return cls(410, "Expired", f"too old resource version: {requested} ({oldest})")
