"""Answers prepared on change: the profiles routes' JSON per audience, ready to write.

An *audience* is what a caller may see: the visible profiles and whether their
``allowed_groups`` are shown. A portal sees every profile with its groups; a user sees the
profiles they may start, so users whose groups open the same profiles share one audience;
an anonymous caller sees the profiles open to everyone (the audience of a user in no group).
Callers map to audiences through a memo keyed by (groups, admin), so a request does not
re-judge the site's profiles.

For each audience, the body of ``GET api/v1/profiles`` (and of each ``profiles/<slug>``,
made when first asked) is serialised once, with its strong ETag (a hash of the bytes) and,
when a client accepts it, a gzip variant (compressed once, on first use). A request only
picks its audience, checks that the answer is current and writes bytes.

An answer is current while its *inputs* are unchanged: the cluster model's ``version``
(every event, list, sync change, watch down or up, reservation), its ``stale`` flag and
the service's note on the cluster, all compared on every request; and for at most
``max_age`` seconds, because time alone moves a few figures (a reservation lapses, the
spawn-duration estimates are re-read from the database). ``as_of`` in the body is the
model's ``as_of`` when the answer was made, which is the model's ``as_of`` now: it only
moves with ``version``. So ``as_of`` and ``stale`` are always those of the request's moment,
without rewriting bytes per request.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from esap_spawner.service.auth import Caller
from esap_spawner.service.views import profiles_body

if TYPE_CHECKING:
    from esap_spawner.service.state import ServiceState
    from esap_spawner.site.profiles import Profile

__all__ = ["Answers", "Audience", "Prepared", "accepts_gzip"]


class Prepared:
    """One answer, serialised: the body, its ETag, and its gzip variant made on first use.

    ``data`` is the body before serialising (the status page renders from it); ``inputs``
    and ``expires`` say until when it is current (see the module docstring).
    """

    __slots__ = ("_gzip", "body", "data", "etag", "expires", "inputs")

    def __init__(self, data: Mapping[str, Any], inputs: Hashable, expires: float) -> None:
        self.data = data
        self.body = json.dumps(data, separators=(",", ":")).encode()
        self.etag = f'"{hashlib.sha1(self.body, usedforsecurity=False).hexdigest()}"'
        self.inputs = inputs
        self.expires = expires
        self._gzip: bytes | None = None

    @property
    def gzip(self) -> bytes:
        """The body gzip-compressed (deterministic: no time stamp in the header)."""
        if self._gzip is None:
            self._gzip = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self._gzip

    @property
    def gzip_etag(self) -> str:
        """The gzip variant's own strong ETag (RFC 9110: one per representation)."""
        return self.etag[:-1] + '-gzip"'


class Audience:
    """What one class of callers sees, and the answers prepared for it (``fixed``: those
    that depend on the visible profiles alone, made once)."""

    __slots__ = ("fixed", "listing", "profiles", "single", "slugs", "with_groups")

    def __init__(self, profiles: Sequence[Profile], *, with_groups: bool) -> None:
        self.profiles = tuple(profiles)
        self.slugs = frozenset(p.slug for p in self.profiles)
        self.with_groups = with_groups
        self.listing: Prepared | None = None
        self.single: dict[str, Prepared] = {}
        self.fixed: dict[str, Prepared] = {}


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip (``gzip;q=0`` does not)."""
    if not header:
        return False
    for part in header.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


class Answers:
    """The prepared answers of one service (one per :class:`~.state.ServiceState`).

    ``max_age``: the longest an answer is served without being made again (seconds).
    ``clock``: monotonic seconds (tests move it).
    """

    def __init__(
        self,
        state: ServiceState,
        *,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        memo_size: int = 1024,
    ) -> None:
        self.state = state
        self.max_age = max_age
        self.clock = clock
        self.memo_size = memo_size
        self.portal = Audience(state.profiles, with_groups=True)
        # audiences by the visible slugs (one object per distinct view), and the memo
        # from what decides visibility (groups, admin) to them
        self._by_view: dict[frozenset[str], Audience] = {}
        self._memo: dict[tuple[frozenset[str], bool], Audience] = {}
        self.root = state.hub_root

    def audience(self, caller: Caller) -> Audience:
        """The audience of a caller with a catalogue scope (or anonymous)."""
        if caller.is_portal:
            return self.portal
        key = (caller.groups, caller.is_admin) if caller.kind == "user" else (frozenset(), False)
        found = self._memo.get(key)
        if found is None:
            found = self._judge(*key)
            if len(self._memo) >= self.memo_size:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _judge(self, groups: frozenset[str], is_admin: bool) -> Audience:
        state = self.state
        visible = [p for p in state.profiles if state.may_use(p, groups=groups, is_admin=is_admin)]
        view = frozenset(p.slug for p in visible)
        found = self._by_view.get(view)
        if found is None:
            found = self._by_view[view] = Audience(visible, with_groups=False)
        return found

    def inputs(self) -> tuple[int, bool, str | None]:
        """What an answer depends on besides time: compared on every request."""
        capacity = self.state.capacity
        return (capacity.version, capacity.stale, self.state.cluster_note)

    def listing(self, audience: Audience) -> Prepared:
        """``GET api/v1/profiles`` for ``audience``, made again only when not current."""
        inputs = self.inputs()
        answer = audience.listing
        if answer is None or answer.inputs != inputs or self.clock() >= answer.expires:
            answer = audience.listing = self._make_listing(audience)
            audience.single.clear()
        return answer

    def single(self, audience: Audience, slug: str) -> Prepared | None:
        """``GET api/v1/profiles/<slug>``; None when the audience cannot see ``slug``."""
        if slug not in audience.slugs:
            return None
        listing = self.listing(audience)
        answer = audience.single.get(slug)
        if answer is None:
            data = listing.data
            body: dict[str, Any] = {
                "as_of": data["as_of"],
                "stale": data["stale"],
                "profile": next(p for p in data["profiles"] if p["slug"] == slug),
            }
            if "message" in data:
                body["message"] = data["message"]
            answer = audience.single[slug] = Prepared(body, listing.inputs, listing.expires)
        return answer

    def once(self, audience: Audience, name: str,
             make: Callable[[Sequence[Profile]], Mapping[str, Any]]) -> Prepared:  # fmt: skip
        """An answer that depends on the audience's profiles alone (``make(profiles)``,
        e.g. the options' schema), made on first use and kept."""
        answer = audience.fixed.get(name)
        if answer is None:
            answer = audience.fixed[name] = Prepared(make(audience.profiles), None, math.inf)
        return answer

    def _make_listing(self, audience: Audience) -> Prepared:
        state = self.state
        # the inputs read before the figures: an answer is never newer than its inputs say
        inputs = self.inputs()
        capacity = state.capacity
        availability = capacity.availability(
            audience.profiles, limited_threshold=state.limited_threshold
        )
        data = profiles_body(
            audience.profiles,
            availability,
            as_of=capacity.as_of,
            stale=capacity.stale,
            root=self.root,
            with_groups=audience.with_groups,
            message=self.message(),
            style=state.query_style,
        )
        return Prepared(data, inputs, self.clock() + self.max_age)

    def message(self) -> str | None:
        """Why availability may be unknown or old, in words (None when it is current)."""
        state = self.state
        if state.cluster_note:
            return state.cluster_note
        if not state.capacity.synced:
            return "the cluster view is not synced yet: availability is 'unknown'"
        if state.capacity.stale:
            return "the cluster view is stale: the watches are down, figures may be old"
        return None
