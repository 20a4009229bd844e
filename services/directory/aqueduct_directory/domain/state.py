"""The read model: every aggregate folded from the notification log, with the indexes queries need.

The same fold serves the live queries and permission checks, the snapshot projection, a full replay
and the audit question "what was true at time T" (fold only the events recorded up to T). Keeping one
fold means a replay cannot disagree with the live state.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from eventsourcing.domain import Aggregate

from aqueduct_directory.domain.catalog import Endpoint, McpServer, Model, TermsOfService
from aqueduct_directory.domain.org import Org, Team, User
from aqueduct_directory.domain.token import ServiceAccount, Token

__all__ = ["DirectoryState"]


class DirectoryState:
    def __init__(self) -> None:
        self.position = 0  # last notification id folded in
        self.changes: dict[str, int] = defaultdict(int)  # events folded per kind of aggregate (Team, User)
        self.aggregates: dict[str, Aggregate] = {}
        self.orgs: dict[str, Org] = {}
        self.teams: dict[str, Team] = {}
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Token] = {}
        self.service_accounts: dict[str, ServiceAccount] = {}
        self.endpoints: dict[str, Endpoint] = {}  # by slug
        self.models: dict[str, Model] = {}  # by name
        self.mcp_servers: dict[str, McpServer] = {}  # by name
        self.terms: TermsOfService | None = None
        self.users_by_subject: dict[str, str] = {}
        self.users_by_email: dict[str, str] = {}
        self.token_by_hash: dict[str, str] = {}
        self.user_teams: dict[str, set[str]] = defaultdict(set)
        self.user_tokens: dict[str, set[str]] = defaultdict(set)  # owner user id -> all tokens it answers for
        self.team_tokens: dict[str, set[str]] = defaultdict(set)  # tokens of the team's service accounts
        # What the snapshot projection must recompute since it last looked.
        self.dirty_tokens: set[str] = set()
        self.dirty_users: set[str] = set()  # users whose own grant (snapshot key user.<id>) may change
        self.dirty_catalog = False
        self.dirty_all = False
        self.dirty_budgets: set[tuple[str, str]] = set()  # (scope, id) whose snapshot budget may change

    # -- folding -----------------------------------------------------------------------------------

    def apply(self, domain_event: Any, notification_id: int) -> None:
        key = str(domain_event.originator_id)
        before = self.aggregates.get(key)
        if before is not None:
            self._mark_dirty(before)
            self._unindex(before)
        aggregate = domain_event.mutate(before)
        self.changes[type(aggregate).__name__] += 1
        self.aggregates[key] = aggregate
        self._index(aggregate)
        self._mark_dirty(aggregate)
        self.position = notification_id

    def take_dirty(self) -> tuple[set[str], set[str], bool, bool]:
        """(tokens, users, catalog changed, everything changed) since the last call."""
        dirty = (self.dirty_tokens, self.dirty_users, self.dirty_catalog, self.dirty_all)
        self.dirty_tokens, self.dirty_users = set(), set()
        self.dirty_catalog, self.dirty_all = False, False
        return dirty

    def take_dirty_budgets(self) -> set[tuple[str, str]]:
        """(scope, id) of the orgs, teams and users changed since the last call."""
        dirty, self.dirty_budgets = self.dirty_budgets, set()
        return dirty

    def _mark_dirty(self, agg: Aggregate) -> None:
        key = str(agg.id)
        if isinstance(agg, Org | Team | User):
            self.dirty_budgets.add((type(agg).__name__.lower(), key))
        if isinstance(agg, Token):
            self.dirty_tokens.add(key)
        elif isinstance(agg, User):
            self.dirty_tokens |= self.user_tokens.get(key, set())
            self.dirty_users.add(key)
        elif isinstance(agg, Team):
            self.dirty_tokens |= self.team_tokens.get(key, set())
            # Marked before and after the change, so members who left are recomputed too.
            self.dirty_users.update(agg.members)
            for user_id in agg.members:
                self.dirty_tokens |= self.user_tokens.get(user_id, set())
        elif isinstance(agg, ServiceAccount):
            if agg.token_id:
                self.dirty_tokens.add(agg.token_id)
        elif isinstance(agg, Org):
            # Org changes are rare and reach every token of the org: recompute them all.
            self.dirty_all = True
        elif isinstance(agg, Endpoint | Model | McpServer):
            self.dirty_catalog = True
            if isinstance(agg, Model | McpServer):
                self.dirty_all = True  # grants list allowed models and MCP servers by name
        else:
            self.dirty_all = True

    def _index(self, agg: Aggregate) -> None:
        key = str(agg.id)
        if isinstance(agg, Org):
            self.orgs[key] = agg
        elif isinstance(agg, Team):
            self.teams[key] = agg
            if not agg.deleted:
                for user_id in agg.members:
                    self.user_teams[user_id].add(key)
        elif isinstance(agg, User):
            self.users[key] = agg
            if agg.subject:
                self.users_by_subject[agg.subject] = key
            self.users_by_email[agg.email.lower()] = key
        elif isinstance(agg, Token):
            self.tokens[key] = agg
            if not agg.revoked:
                self.token_by_hash[agg.token_hash] = key
                self.user_tokens[agg.user_id].add(key)
                if agg.team_id and agg.service_account_id:
                    self.team_tokens[agg.team_id].add(key)
        elif isinstance(agg, ServiceAccount):
            self.service_accounts[key] = agg
        elif isinstance(agg, Endpoint):
            self.endpoints[agg.slug] = agg
        elif isinstance(agg, Model):
            self.models[agg.name] = agg
        elif isinstance(agg, McpServer):
            self.mcp_servers[agg.name] = agg
        elif isinstance(agg, TermsOfService):
            self.terms = agg

    def _unindex(self, agg: Aggregate) -> None:
        key = str(agg.id)
        if isinstance(agg, Team):
            for user_id in agg.members:
                self.user_teams[user_id].discard(key)
        elif isinstance(agg, User):
            if agg.subject:
                self.users_by_subject.pop(agg.subject, None)
            self.users_by_email.pop(agg.email.lower(), None)
        elif isinstance(agg, Token):
            self.token_by_hash.pop(agg.token_hash, None)
            self.user_tokens[agg.user_id].discard(key)
            if agg.team_id:
                self.team_tokens[agg.team_id].discard(key)

    # -- queries -----------------------------------------------------------------------------------

    def org_by_name(self, name: str) -> Org | None:
        return next((o for o in self.orgs.values() if o.name == name), None)

    def org_by_sso_group(self, groups: list[str]) -> Org | None:
        wanted = set(groups)
        matches = sorted((o for o in self.orgs.values() if o.sso_group in wanted), key=lambda o: o.name)
        return matches[0] if matches else None

    def live_teams(self, org_id: str | None = None) -> list[Team]:
        teams = [t for t in self.teams.values() if not t.deleted and (org_id is None or t.org_id == org_id)]
        return sorted(teams, key=lambda t: (t.name, str(t.id)))

    def team_by_name(self, org_id: str, name: str) -> Team | None:
        return next((t for t in self.live_teams(org_id) if t.name == name), None)

    def teams_of(self, user_id: str) -> list[Team]:
        teams = [self.teams[t] for t in self.user_teams.get(user_id, set())]
        return sorted(teams, key=lambda t: (t.members[user_id]["joined_at"], str(t.id)))

    def live_users(self, org_id: str | None = None) -> list[User]:
        users = [u for u in self.users.values() if not u.deleted and (org_id is None or u.org_id == org_id)]
        return sorted(users, key=lambda u: (u.email, str(u.id)))

    def all_users(self, org_id: str | None = None) -> list[User]:
        """Active and deactivated users."""
        users = [u for u in self.users.values() if org_id is None or u.org_id == org_id]
        return sorted(users, key=lambda u: (u.email, str(u.id)))

    def user_tokens_owned(self, user_id: str) -> list[Token]:
        """Personal tokens of the user (service-account tokens excluded)."""
        found = (self.tokens[t] for t in self.user_tokens.get(user_id, set()))
        return sorted((t for t in found if not t.service_account_id), key=lambda t: t.created_on)

    def team_service_accounts(self, team_id: str) -> list[ServiceAccount]:
        found = [s for s in self.service_accounts.values() if s.team_id == team_id and not s.deleted]
        return sorted(found, key=lambda s: (s.name, str(s.id)))

    def service_accounts_owned(self, user_id: str, team_id: str | None = None) -> list[ServiceAccount]:
        return [
            s
            for s in self.service_accounts.values()
            if not s.deleted and s.owner_user_id == user_id and (team_id is None or s.team_id == team_id)
        ]

    def live_tokens(self) -> list[Token]:
        return [t for t in self.tokens.values() if not t.revoked]
