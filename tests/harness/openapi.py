"""The service's OpenAPI document as the tests check answers against it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from esap_spawner.service.handlers import load_openapi

OPENAPI = load_openapi()
REGISTRY: Registry = Registry().with_resource(
    "urn:esap-openapi", Resource.from_contents(OPENAPI, default_specification=DRAFT202012)
)


def schema_validator(pointer: str) -> Draft202012Validator:
    """A validator for the schema at ``pointer`` in the document (``$ref``s resolved)."""
    return Draft202012Validator({"$ref": f"urn:esap-openapi#{pointer}"}, registry=REGISTRY)


def check_openapi(method: str, path_template: str, response: Any) -> Any:
    """The answer's status is documented for this route, and its body fits the schema.

    ``response`` has ``code``, ``headers`` and ``body`` (a tornado HTTPResponse or alike).
    """
    operation = OPENAPI["paths"][path_template][method.lower()]
    status = str(response.code)
    assert status in operation["responses"], f"{method} {path_template}: {status} undocumented"
    documented = operation["responses"][status]
    if response.code == 304:
        assert response.body == b""
        return None
    content = documented["content"]
    media = response.headers["Content-Type"].split(";")[0]
    if media == "application/json":
        body = json.loads(response.body)
        pointer = f"/paths/{path_template.replace('/', '~1')}/{method.lower()}/responses/{status}"
        pointer += "/content/application~1json/schema"
        errors = sorted(schema_validator(pointer).iter_errors(body), key=str)
        assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
        return body
    assert media in content or "text/plain" in content
    return response.body.decode()


@dataclass
class Answer:
    """A requests answer in the shape :func:`check_openapi` reads."""

    code: int
    headers: Any
    body: bytes


def answer(r: requests.Response) -> Answer:
    return Answer(r.status_code, r.headers, r.content)
