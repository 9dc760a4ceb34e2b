"""One DID type, one grammar: every reader of a DID agrees with :func:`parse_did` (no I/O).

The readers are the spawn options' validator (form, deep link, REST body), the advertising
API's locality body, the catalogues' list check, the init program's plan check, and the
patterns in the OpenAPI document and the site file's schema. Before they shared one
function, the options accepted the scopes ``.`` and ``..`` that the catalogue refused (and
``POST api/v1/locality {"dids": ["..:d"]}`` answered 500).
"""

from __future__ import annotations

import ast
import json
import re
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esap_spawner.data.catalogue import InvalidDid, check_dids
from esap_spawner.data.datalinks import Refused, split_did
from esap_spawner.data.did import DID_PATTERN, Did, DidError, parse_did
from esap_spawner.service.handlers import load_openapi
from esap_spawner.spawn.options import OptionsError, validate_did

ACCEPTED = [
    ("escape:crab-2020", Did("escape", "crab-2020")),
    ("user.alice:L123_4.tar", Did("user.alice", "L123_4.tar")),
    ("_x:y", Did("_x", "y")),
    ("s" * 25 + ":" + "n" * 250, Did("s" * 25, "n" * 250)),
    ("a:b.", Did("a", "b.")),
]

REFUSED = [
    ("nocolon", "is not a dataset identifier"),
    (":name", "the scope ''"),
    ("scope:", "the name ''"),
    ("..:d", "the scope '..'"),
    (".:d", "the scope '.'"),
    (".hidden:d", "the scope '.hidden'"),
    ("-x:d", "the scope '-x'"),
    ("../etc:x", "the scope '../etc'"),
    ("scope:../etc", "the name '../etc'"),
    ("scope:..", "the name '..'"),
    ("scope:.hidden", "the name '.hidden'"),
    ("scope:a/b", "the name 'a/b'"),
    ("scope:a:b", "the name 'a:b'"),
    ("sco pe:x", "the scope 'sco pe'"),
    ("scope:x\n", "the name 'x\\n'"),
    ("scope:x\x00", "the name 'x\\x00'"),
    ("\u00e9:x", "the scope"),
    ("scope:x\u202e", "the name"),
    ("s" * 26 + ":n", "1 to 25"),
    ("scope:" + "n" * 251, "1 to 250"),
]


@pytest.mark.parametrize(("text", "did"), ACCEPTED)
def test_accepted_dids_parse_and_write_back(text: str, did: Did) -> None:
    assert parse_did(text) == did
    assert str(parse_did(text)) == text
    scope, name = parse_did(text)  # a pair, as callers unpack it
    assert (scope, name) == (did.scope, did.name)


@pytest.mark.parametrize(("text", "words"), REFUSED)
def test_refused_dids_say_why(text: str, words: str) -> None:
    with pytest.raises(DidError) as info:
        parse_did(text)
    assert words in str(info.value)


@pytest.mark.parametrize("value", [None, 5, b"a:b", ["a:b"], {"did": "a:b"}])
def test_only_text_is_a_did(value: Any) -> None:
    with pytest.raises(DidError, match="must be text"):
        parse_did(value)


def test_a_long_did_is_quoted_back_shortened() -> None:
    with pytest.raises(DidError) as info:
        parse_did("lofar:" + "L" * 10_000_000)
    assert len(str(info.value)) < 400


def accepts(check: Any, did: Any) -> bool:
    try:
        check(did)
    except (DidError, OptionsError, InvalidDid, Refused):
        return False
    return True


def every_reader(did: Any) -> dict[str, bool]:
    """Each reader's verdict on ``did``."""
    documented = load_openapi()["components"]["schemas"]["LocalityRequest"]
    openapi = documented["properties"]["dids"]["items"]["pattern"]
    return {
        "grammar": accepts(parse_did, did),
        "options": accepts(validate_did, did),
        "catalogue": accepts(lambda d: check_dids([d]), did),
        "init program": accepts(split_did, did),
        "openapi pattern": isinstance(did, str) and re.fullmatch(openapi, did) is not None,
    }


@pytest.mark.parametrize("did", [text for text, _ in ACCEPTED] + [text for text, _ in REFUSED])
def test_every_reader_agrees_on_the_table(did: str) -> None:
    verdicts = every_reader(did)
    assert len(set(verdicts.values())) == 1, verdicts


DID_CHARS = st.sampled_from(list("aZ09_.-:/ \n\x00\u00e9\u202e"))


@settings(max_examples=300, deadline=None)
@given(did=st.text(DID_CHARS, min_size=0, max_size=12) | st.from_regex(DID_PATTERN))
def test_every_reader_agrees_on_generated_text(did: str) -> None:
    verdicts = every_reader(did)
    assert len(set(verdicts.values())) == 1, (did, verdicts)


def test_the_documents_carry_the_grammar() -> None:
    """The OpenAPI document and the site file's schema give exactly the grammar's pattern."""
    documented = load_openapi()["components"]["schemas"]["LocalityRequest"]
    assert documented["properties"]["dids"]["items"]["pattern"] == DID_PATTERN
    schema = json.loads(
        resources.files("esap_spawner.site").joinpath("site.schema.json").read_text("utf-8")
    )
    assert did_patterns(schema) == [DID_PATTERN]


def did_patterns(schema: Any) -> list[str]:
    """The pattern of every property named ``did`` in a JSON schema."""
    found: list[str] = []
    if isinstance(schema, dict):
        did = (schema.get("properties") or {}).get("did")
        if isinstance(did, dict) and "pattern" in did:
            found.append(did["pattern"])
        for value in schema.values():
            found += did_patterns(value)
    elif isinstance(schema, list):
        for value in schema:
            found += did_patterns(value)
    return found


def test_the_grammar_module_imports_only_the_standard_library() -> None:
    """It travels into the user's image beside the init program, where nothing else is."""
    source = resources.files("esap_spawner.data").joinpath("did.py").read_text("utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(str(node.module))
    assert imported <= {"__future__", "re", "typing"}, imported
