"""What one server of a profile needs from a node, in the cluster model's integer units.

:class:`ProfileRequirements` is a hashable summary of a profile (requests as an interned
vector, node selector, tolerations, image, quota) so :mod:`esap_spawner.capacity.model` can cache
answers per placement; :func:`requirements_of` builds it from a site profile. Quantities are
integers: CPU in millicores, every other resource in its base unit (bytes, devices, pods),
rounded up as the Kubernetes scheduler does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any

from esap_spawner.capacity import placement
from esap_spawner.site.quantity import parse_quantity

__all__ = [
    "KnownRequirements",
    "ProfileRequirements",
    "Vector",
    "describe_vector",
    "image_aliases",
    "intern_vector",
    "pod_vector",
    "quantity_int",
    "requirements_of",
]

# A request vector: sorted (resource, amount) pairs, CPU in millicores. Equal vectors are
# shared (see intern_vector) so that thousands of identical pods cost one tuple.
Vector = tuple[tuple[str, int], ...]

# Intern tables, process-wide like sys.intern and bounded: pure memos of pure conversions
# (a quantity's integer, a vector's one shared tuple), so sharing them between models,
# hubs or tests can never change an answer. Nothing else about a cluster is module state.
_QUANTITIES: dict[tuple[str, str], int] = {}
_VECTORS: dict[Vector, Vector] = {}
_POD_VECTORS: dict[tuple[Any, ...], Vector] = {}


def quantity_int(resource: str, value: Any) -> int:
    """A quantity as the integer the model counts in: millicores for ``cpu``, base units
    (bytes, devices) for everything else, rounded up like the scheduler does."""
    key = (resource, value)
    found = _QUANTITIES.get(key)
    if found is None:
        exact = value if isinstance(value, Decimal) else parse_quantity(value)
        if resource == "cpu":
            exact *= 1000
        found = int(exact) if exact == int(exact) or exact < 0 else int(exact) + 1
        if len(_QUANTITIES) > 4096:
            _QUANTITIES.clear()
        _QUANTITIES[key] = found
    return found


def intern_vector(amounts: Mapping[str, Any]) -> Vector:
    vector = tuple(sorted((r, quantity_int(r, q)) for r, q in amounts.items()))
    vector = tuple((r, v) for r, v in vector if v)
    shared = _VECTORS.get(vector)
    if shared is None:
        if len(_VECTORS) > 4096:
            _VECTORS.clear()
        shared = _VECTORS[vector] = vector
    return shared


def pod_vector(pod: Mapping[str, Any]) -> Vector:
    """What a pod requests of its node (scheduler semantics), plus one ``pods`` slot.

    Pods of one kind share their requests, and a pod's watch events repeat them: the
    vector is remembered by the quantities as written (no parsing for a repeat)."""
    spec = pod.get("spec") or {}
    try:
        key = _requests_key(spec)
        found = _POD_VECTORS.get(key)
    except TypeError:  # a quantity that cannot be a key: work it out every time
        key, found = None, None
    if found is None:
        amounts: dict[str, Any] = dict(placement.pod_requests(spec))
        amounts["pods"] = 1
        found = intern_vector(amounts)
        if key is not None:
            if len(_POD_VECTORS) > 4096:
                _POD_VECTORS.clear()
            _POD_VECTORS[key] = found
    return found


def _requests_key(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """Everything :func:`placement.pod_requests` reads, as a hashable value."""

    def resources(containers: Any) -> tuple[Any, ...]:
        out = []
        for c in containers or ():
            r = c.get("resources") or {}
            out.append((tuple(sorted((r.get("requests") or {}).items())),
                        tuple(sorted((r.get("limits") or {}).items()))))  # fmt: skip
        return tuple(out)

    overhead = tuple(sorted((spec.get("overhead") or {}).items()))
    return resources(spec.get("containers")), resources(spec.get("initContainers")), overhead


def describe_vector(vector: Vector) -> str:
    """``16 CPU, 64 GB, 1 nvidia.com/gpu`` (the ``pods`` slot is left out)."""
    parts = []
    for resource, value in vector:
        if resource == "cpu":
            parts.append(f"{_short(value / 1000)} CPU")
        elif resource in ("memory", "ephemeral-storage"):
            label = "GB" if resource == "memory" else "GB ephemeral storage"
            parts.append(f"{_short(value / 1e9)} {label}")
        elif resource != "pods":
            parts.append(f"{value} {resource}")
    return ", ".join(parts) or "nothing"


def _short(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")


def image_aliases(image: str | None) -> frozenset[str]:
    """The names a node may list for ``image`` (Docker Hub names have implied parts)."""
    if not image:
        return frozenset()
    names = {image}
    first, _, rest = image.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        path = image if rest else f"library/{image}"
        names.update({f"docker.io/{path}", f"docker.io/{image}"})
    if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        names.update({f"{n}:latest" for n in list(names)})
    return frozenset(names)


@dataclass(frozen=True)
class ProfileRequirements:
    """What one server of a profile needs from a node, in the model's integer units.

    Build it with :meth:`build` (from quantities) or :func:`requirements_of` (from a
    site profile). Hashable, so per-profile answers can be cached.
    """

    slug: str
    requests: Vector
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[tuple[tuple[str, Any], ...], ...] = ()
    image: str | None = None
    max_servers: int | None = None
    limits: Vector = ()  # only what the profile sets; ResourceQuota limits.* keys count it

    @classmethod
    def build(
        cls,
        slug: str,
        *,
        requests: Mapping[str, Any],
        node_selector: Mapping[str, str] | None = None,
        tolerations: Iterable[Mapping[str, Any]] = (),
        image: str | None = None,
        max_servers: int | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> ProfileRequirements:
        for resource, value in requests.items():
            if quantity_int(resource, value) < 0:
                raise ValueError(f"profile {slug!r}: negative request {resource}={value!r}")
        if max_servers is not None and max_servers < 0:
            raise ValueError(f"profile {slug!r}: max_servers must be >= 0, got {max_servers!r}")
        return cls(
            slug=slug,
            requests=intern_vector({**requests, "pods": 1}),
            node_selector=tuple(sorted((node_selector or {}).items())),
            tolerations=tuple(tuple(sorted(t.items())) for t in tolerations),
            image=image,
            max_servers=max_servers,
            limits=intern_vector(limits or {}),
        )

    @property
    def placement_key(self) -> tuple[Any, ...]:
        """Everything that decides where and how many servers fit (not slug or quota)."""
        return (self.requests, self.node_selector, self.tolerations, self.image)

    @cached_property
    def toleration_dicts(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.tolerations]

    @cached_property
    def selector_dict(self) -> dict[str, str]:
        return dict(self.node_selector)


def requirements_of(profile: ProfileRequirements | Any) -> ProfileRequirements:
    """:class:`ProfileRequirements` of a site profile (``esap_spawner.site.profiles.Profile``),
    from its :attr:`~esap_spawner.site.profiles.Profile.spec`: the requests, limits,
    placement and image KubeSpawner's pod gets, read once per profile."""
    if isinstance(profile, ProfileRequirements):
        return profile
    spec = profile.spec
    return ProfileRequirements.build(
        profile.slug,
        requests=spec.requests,
        limits=spec.limits,
        node_selector=spec.node_selector,
        tolerations=spec.tolerations,
        image=spec.image,
        max_servers=profile.max_servers,
    )


class KnownRequirements:
    """:func:`requirements_of`, kept per profile for one model: a profile asked about
    again costs a look-up; a new profile object for a slug (the site file changed) is read
    anew."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[Any, ProfileRequirements]] = {}

    def __call__(self, profile: ProfileRequirements | Any) -> ProfileRequirements:
        if isinstance(profile, ProfileRequirements):
            return profile
        known = self._known.get(profile.slug)
        if known is None or known[0] is not profile:
            known = self._known[profile.slug] = (profile, requirements_of(profile))
        return known[1]
