"""Users' own grants (auth snapshot keys ``user.<id>``), mirrored in memory by a KV watch.

A JupyterHub token authenticates as its user's own grant; the proxy's bridge serves requests from it,
and the batch worker runs the lines of a batch created with such a token under it.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from aqueduct_libs import names
from aqueduct_libs.snapshot import TokenGrant

__all__ = ["USER_GRANT_KEYS", "UserGrants"]

log = logging.getLogger(__name__)

USER_GRANT_KEYS = f"{names.SNAPSHOT_USER_PREFIX}>"  # the KV watch filter for these keys


class UserGrants:
    """Feed it the ``user.*`` entries of the auth snapshot; a deleted key (deactivated user) is forgotten."""

    def __init__(self) -> None:
        self._grants: dict[str, TokenGrant] = {}  # user id -> the user's own grant
        self._user_keys: dict[str, str] = {}  # KV key -> user id, to apply deletes

    def get(self, user_id: str) -> TokenGrant | None:
        return self._grants.get(user_id)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._grants

    def on_user_put(self, key: str, value: bytes) -> None:
        try:
            grant = TokenGrant.model_validate_json(value)
        except ValidationError as exc:
            log.error("ignoring malformed user grant %s: %s", key, exc.errors()[:1])
            return
        self._user_keys[key] = grant.user_id
        self._grants[grant.user_id] = grant

    def on_user_delete(self, key: str) -> None:
        user_id = self._user_keys.pop(key, None)
        if user_id is not None:
            self._grants.pop(user_id, None)
