"""Names for the ids reports carry: the latest name (and, for users, e-mail) of each user, team, token and
org, read from the mirror of the directory's events (``directory_events``), newest event first."""

from __future__ import annotations

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse

__all__ = ["AGGREGATES", "latest_names"]

# Report grouping -> the directory aggregate its ids belong to.
AGGREGATES = {"user": "User", "team": "Team", "token": "Token", "org": "Org"}

_NAMES = """
SELECT aggregate_id,
    argMaxIf(JSONExtractString(data, 'name'), notification_id, JSONHas(data, 'name')) AS name,
    argMaxIf(JSONExtractString(data, 'email'), notification_id, JSONHas(data, 'email')) AS email
FROM directory_events
WHERE aggregate_type = {aggregate:String} AND aggregate_id IN {ids:Array(String)}
GROUP BY aggregate_id
"""


async def latest_names(ch: AsyncClickHouse, group_by: str, ids: list[str]) -> dict[str, tuple[str, str]]:
    """id -> (name, email) for the ids of a report grouped by ``group_by``; ids never named are absent."""
    aggregate = AGGREGATES.get(group_by)
    wanted = sorted({i for i in ids if i})
    if aggregate is None or not wanted:
        return {}
    result = await ch.query(_NAMES, {"aggregate": aggregate, "ids": wanted})
    return {str(i): (str(name or ""), str(email or "")) for i, name, email in result.rows}
