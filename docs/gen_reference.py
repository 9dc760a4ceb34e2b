"""Generated reference pages: an MkDocs hook, also runnable as a script.

The pages keep their prose; a marker comment on a line of its own is replaced at build
time by a reference generated from the source of truth:

- ``<!-- esap:site-reference -->``: every key of the site file, from
  ``esap_spawner/site/site.schema.json`` (path, type, default, description);
- ``<!-- esap:values-reference -->``: the Helm chart's own values, from
  ``helm/esap-jupyterhub/values.schema.yaml``;
- ``<!-- esap:config-reference -->``: the configurable traits of ``ESAPSpawner`` and
  ``ESAPService`` (type, default, help), for the classes that exist;
- ``<!-- esap:api-routes -->``: the service's routes, from its OpenAPI document;
- ``<!-- esap:options-reference -->``: the spawn options, from their one declaration
  (``esap_spawner/spawn/options.py``);
- ``<!-- esap:wing-imports -->``: which wing of the package imports which, read from the
  source (``esap_spawner/dev/imports.py``).

``mkdocs.yml`` names this file under ``hooks:``. Run it alone to print one reference::

    python docs/gen_reference.py site|values|config|routes|options|wings
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SITE_SCHEMA = REPO / "esap_spawner" / "site" / "site.schema.json"
VALUES_SCHEMA = REPO / "helm" / "esap-jupyterhub" / "values.schema.yaml"
VALUES_FILE = REPO / "helm" / "esap-jupyterhub" / "values.yaml"
OPENAPI = REPO / "esap_spawner" / "service" / "openapi.json"

# (module, class, what it is) for the config reference
CONFIG_CLASSES = [
    (
        "esap_spawner.spawn.spawner",
        "ESAPSpawner",
        "the spawner, configured in jupyterhub_config.py",
    ),
    (
        "esap_spawner.service.app",
        "ESAPService",
        "the advertising service, `esap-spawner service` (options on its command line, as"
        " named below or as `--ESAPService.<option>=VALUE`, or in the file given with"
        " `--config FILE`; `esap-spawner service --help` lists them)",
    ),
]

# pages other people write; the nav names them, the build tolerates their absence
OPTIONAL_PAGES = {"metrics.md", "performance.md", "security.md"}

log = logging.getLogger("mkdocs.hooks.esap")

# -- JSON Schema -> table ---------------------------------------------------------------


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` merged in (the node's own keys win)."""
    ref = node.get("$ref")
    if not ref:
        return node
    if not ref.startswith("#/"):
        raise ValueError(f"cannot resolve the reference {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(_resolve(target, root))
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _type(node: dict[str, Any], root: dict[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(_type(_resolve(n, root), root) for n in node[key])
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array" and isinstance(node.get("items"), dict):
        return f"list of {_type(_resolve(node['items'], root), root)}"
    if kind:
        return str(kind)
    if "properties" in node:
        return "object"
    return "any"


def _lookup(values: dict[str, Any] | None, path: str) -> tuple[bool, Any]:
    """The value at the dotted ``path`` of ``values``; lists are not entered."""
    if values is None or "[]" in path:
        return False, None
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def schema_rows(
    node: dict[str, Any],
    root: dict[str, Any],
    path: str = "",
    *,
    required: bool = False,
    skip: frozenset[str] = frozenset(),
    defaults: dict[str, Any] | None = None,
) -> Iterator[tuple[str, str, str, str]]:
    """(key path, type, default, description) for ``node`` and everything under it.

    Defaults come from the schema's ``default``, else from ``defaults`` (a values file).
    """
    node = _resolve(node, root)
    if path:
        found, value = _lookup(defaults, path)
        if "default" in node:
            default = f"`{json.dumps(node['default'])}`"
        elif found and not isinstance(value, dict):
            default = f"`{json.dumps(value)}`"
        else:
            default = "required" if required else ""
        yield path, _type(node, root), default, node.get("description", "")
    if path in skip:
        return
    needed = set(node.get("required", []))
    for key, sub in node.get("properties", {}).items():
        child = f"{path}.{key}" if path else key
        yield from schema_rows(
            sub, root, child, required=key in needed, skip=skip, defaults=defaults
        )
    items = node.get("items")
    if isinstance(items, dict):
        items = _resolve(items, root)
        if "properties" in items:
            needed = set(items.get("required", []))
            for key, sub in items["properties"].items():
                yield from schema_rows(
                    sub, root, f"{path}[].{key}", required=key in needed, skip=skip
                )


def schema_table(
    schema: dict[str, Any],
    *,
    heading_level: int = 2,
    skip: frozenset[str] = frozenset(),
    defaults: dict[str, Any] | None = None,
) -> str:
    """One section per top-level key, each a table of every key under it."""
    out: list[str] = []
    needed = set(schema.get("required", []))
    for key, sub in schema.get("properties", {}).items():
        resolved = _resolve(sub, schema)
        out.append(f"{'#' * heading_level} `{key}`\n")
        out.append(_cell(resolved.get("description", "")) + "\n")
        out.append("| key | type | default | description |")
        out.append("|---|---|---|---|")
        for path, kind, default, description in schema_rows(
            sub, schema, key, required=key in needed, skip=skip, defaults=defaults
        ):
            out.append(f"| `{path}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
        out.append("")
    return "\n".join(out)


def site_reference() -> str:
    return schema_table(json.loads(SITE_SCHEMA.read_text()))


def values_reference() -> str:
    schema = yaml.safe_load(VALUES_SCHEMA.read_text())
    schema["properties"] = {
        k: v for k, v in schema["properties"].items() if k not in ("esap", "global")
    }
    defaults = yaml.safe_load(VALUES_FILE.read_text())
    return schema_table(schema, heading_level=3, skip=frozenset({"jupyterhub"}), defaults=defaults)


# -- traitlets -> sections ---------------------------------------------------------------


def rst_to_markdown(text: str) -> str:
    """Trait help (reStructuredText-ish) as Markdown: ``code`` and ``Example::`` blocks."""
    lines = inspect.cleandoc(text).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            intro = line.rstrip()[:-2].rstrip()
            if intro:
                out.append(intro + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```python", inspect.cleandoc("\n".join(block)), "```", ""]
            continue
        out.append(re.sub(r"``([^`]+)``", r"`\1`", line))
        i += 1
    return "\n".join(out).strip()


def own_traits(cls: Any) -> dict[str, Any]:
    """The configurable traits esap-spawner's own classes in ``cls``'s ancestry define."""
    found: dict[str, Any] = {}
    for ancestor in reversed(cls.__mro__):
        if ancestor.__module__.startswith("esap_spawner") and hasattr(ancestor, "class_own_traits"):
            found.update(ancestor.class_own_traits(config=True))
    return found


def command_line_options(cls: Any) -> dict[str, str]:
    """trait name -> its short option, for a traitlets Application (``esap-spawner service``)."""
    options: dict[str, str] = {}
    for option, target in getattr(cls, "aliases", {}).items():
        section, _, name = str(target).rpartition(".")
        if section == cls.__name__:
            options[name] = f"--{option}=VALUE"
    for option, (config, _help) in getattr(cls, "flags", {}).items():
        for name, value in config.get(cls.__name__, {}).items():
            options[name] = f"--{option}" + ("" if value is True else f" (sets {value!r})")
    return options


def config_reference() -> str:
    out: list[str] = []
    for module_name, class_name, what in CONFIG_CLASSES:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            log.info("config reference: %s.%s not available (%s)", module_name, class_name, exc)
            continue
        parents = [
            b.__name__
            for b in cls.__mro__[1:]
            if not b.__module__.startswith("esap_spawner") and b.__name__ != "object"
        ][:2]
        out.append(f"## `{class_name}`\n")
        intro = f"{class_name} is {what}. Configure it as `c.{class_name}.<option>`."
        if parents:
            intro += (
                f" Options inherited from {', '.join(f'`{p}`' for p in parents)} apply too;"
                " only the options esap-spawner adds are listed here."
            )
        out.append(intro + "\n")
        options = command_line_options(cls)
        for name, trait in sorted(own_traits(cls).items()):
            out.append(f"### `{class_name}.{name}`\n")
            line = f"*{type(trait).__name__}*, default `{trait.default_value_repr()}`"
            if name in options:
                line += f"; command line: `{options[name]}`"
            out.append(line + "\n")
            out.append(rst_to_markdown(trait.help or "(no help)") + "\n")
    if not out:
        return "No configurable class could be imported: install esap-spawner first."
    return "\n".join(out)


# -- OpenAPI -> routes -----------------------------------------------------------------


def api_routes() -> str:
    spec = json.loads(OPENAPI.read_text())
    base = spec.get("servers", [{}])[0].get("url", "")
    out = ["| method | path | what |", "|---|---|---|"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            summary = operation.get("summary", "")
            out.append(f"| `{method.upper()}` | `{base}{path}` | {_cell(summary)} |")
    return "\n".join(out) + "\n"


# -- the user options' declaration -> table ------------------------------------------


def options_reference() -> str:
    """The spawn options, from ``esap_spawner.spawn.options.OPTIONS`` (the one declaration)."""
    options = importlib.import_module("esap_spawner.spawn.options")
    out = ["| option | query argument | form field | what |", "|---|---|---|---|"]
    for option in options.OPTIONS:
        needs = f" Needs `{option.needs}`." if option.needs else ""
        out.append(
            f"| `{option.name}` | `opt-{option.name}` | {_cell(option.label)} "
            f"| {_cell(option.help)}{needs} |"
        )
    return "\n".join(out) + "\n"


def wing_imports() -> str:
    """Which wing imports which (beside the rules tests/unit/test_boundaries.py holds)."""
    imports = importlib.import_module("esap_spawner.dev.imports")
    graph = imports.wing_graph(imports.package_imports(REPO))
    out = ["| wing | imports from |", "|---|---|"]
    for wing in ("top", *imports.WINGS):
        targets = ", ".join(f"`{t}`" for t in sorted(graph.get(wing, ()))) or "no other wing"
        out.append(f"| `{wing}` | {targets} |")
    return "\n".join(out) + "\n"


GENERATORS = {
    "wing-imports": wing_imports,
    "options-reference": options_reference,
    "site-reference": site_reference,
    "values-reference": values_reference,
    "config-reference": config_reference,
    "api-routes": api_routes,
}
MARKER = re.compile(r"^<!-- esap:([a-z-]+) -->$", re.MULTILINE)


def expand(markdown: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"unknown generated section {name!r}; known: {sorted(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


# -- MkDocs hooks ------------------------------------------------------------------------


def _drop_missing(nav: Any, docs_dir: Path) -> Any:
    if isinstance(nav, list):
        kept = [_drop_missing(item, docs_dir) for item in nav]
        return [item for item in kept if item is not None]
    if isinstance(nav, dict):
        out = {}
        for title, target in nav.items():
            target = _drop_missing(target, docs_dir)
            if target is not None:
                out[title] = target
        return out or None
    if isinstance(nav, str) and nav in OPTIONAL_PAGES and not (docs_dir / nav).exists():
        log.info("nav: %s is not written yet; left out", nav)
        return None
    return nav


def on_config(config: Any) -> Any:
    config["nav"] = _drop_missing(config["nav"], Path(config["docs_dir"]))
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown)


if __name__ == "__main__":
    aliases = {"site": "site-reference", "values": "values-reference"}
    aliases |= {"config": "config-reference", "routes": "api-routes"}
    aliases |= {"options": "options-reference", "wings": "wing-imports"}
    if len(sys.argv) != 2 or sys.argv[1] not in aliases:
        print(f"usage: python docs/gen_reference.py {'|'.join(aliases)}", file=sys.stderr)
        sys.exit(2)
    print(GENERATORS[aliases[sys.argv[1]]]())
