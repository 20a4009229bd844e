"""The viewer's roles as the directory has them now, not as they were at sign-in.

A session's claims carry the roles of its sign-in; a user promoted to Team-Admin (or demoted, or made
Org-Admin) would see the change only after signing in again. Each page load therefore reads the user's
current roles from the directory (``GET /api/me``, with the user's own session), kept for ``ttl`` seconds
per session so that a burst of page loads costs one call (a new sign-in is a new session, read afresh).
A change made through this UI process forgets what was kept at once; a change made elsewhere (CLI, API,
another UI process) shows within ``ttl``.

When the directory cannot be asked, the roles it last gave for the session still hold: falling back to the
sign-in's would hand a demoted Admin their controls back for as long as the directory is away, and auth
and accounting still act on the sign-in's claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aqueduct_ui.adapters.api import ApiError, ServiceApi
from aqueduct_ui.domain.viewer import Roles

__all__ = ["NO_ROLES", "CurrentRoles"]

# Beyond this many sessions kept, the half read longest ago is dropped.
_PRUNE_AT = 10_000


# The directory refused the user (deactivated, unknown): the pages offer them nothing; the APIs refuse too.
NO_ROLES = Roles()


class CurrentRoles:
    def __init__(self, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._kept: dict[str, tuple[float, Roles]] = {}

    async def of(self, session_token: str, directory: ServiceApi) -> Roles | None:
        """The session's user's roles now; when the directory cannot be asked, the last it gave for this
        session, or None when it never did (the sign-in's apply)."""
        now = self.clock()
        kept = self._kept.get(session_token)
        if kept is not None and kept[0] > now:
            return kept[1]
        try:
            me = await directory.get("/api/me")
        except ApiError as exc:
            if exc.status >= 500:
                return None if kept is None else kept[1]  # the last known, however old
            roles = NO_ROLES
        else:
            roles = Roles(
                admin=bool(me.get("admin")),
                org_admin=bool(me.get("org_admin")),
                org_id=me.get("org_id"),
                teams=frozenset(me.get("teams") or ()),
                team_admin=frozenset(me.get("team_admin") or ()),
            )
        if len(self._kept) >= _PRUNE_AT:
            # The half read longest ago is dropped (a live session is read again within ``ttl``).
            newest = sorted(self._kept.items(), key=lambda item: item[1][0], reverse=True)
            self._kept = dict(newest[: _PRUNE_AT // 2])
        self._kept[session_token] = (now + self.ttl, roles)
        return roles

    def forget(self) -> None:
        """Roles may have changed (a form was submitted): read them afresh on the next page load (what
        was read stays the last known, should the directory not answer then)."""
        self._kept = {k: (float("-inf"), roles) for k, (_, roles) in self._kept.items()}
