"""One of every stored event of the directory, made by the domain's own commands, in a plausible order.

Used by the tests of the public contract: every event class must appear here (a test lists the domain's
classes), so a new event cannot reach the bus without a translation, a model and a fixture.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate, CanMutateAggregate

from aqueduct_directory import domain

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
ACTOR = "3f1c2b9e-0000-4000-8000-000000000001"


def aggregate_classes() -> list[type[Aggregate]]:
    """Every aggregate class the domain package exports."""
    found = (getattr(domain, name) for name in domain.__all__)
    return [c for c in found if isinstance(c, type) and issubclass(c, Aggregate)]


def stored_event_classes() -> dict[str, type]:
    """``Aggregate.EventName`` -> class, for every event class the domain defines (the library's own
    bases ``Event`` and ``Created`` are never recorded when every command names its event)."""
    classes = {}
    for aggregate in aggregate_classes():
        for name, value in vars(aggregate).items():
            if isinstance(value, type) and issubclass(value, CanMutateAggregate):
                if name not in ("Event", "Created"):
                    classes[f"{aggregate.__name__}.{name}"] = value
    return classes


def one_of_each() -> list[Any]:
    """Domain events, in the order they were recorded within each aggregate."""
    org = domain.Org("acme", "acme-staff", {"requests_per_minute": 60}, {"daily_usd": "5"}, actor=ACTOR)
    team = domain.Team(str(org.id), "research", "Research", {"requests_per_minute": 30}, actor=ACTOR)
    org.update("acme", "acme-all", actor=ACTOR)
    org.set_default_team(str(team.id), actor=ACTOR)
    org.set_limits({"requests_per_minute": 120}, actor=ACTOR)
    org.set_budgets({"monthly_usd": "100.50", "monthly_tokens": 5_000_000}, actor=ACTOR)
    org.set_excluded_models(["gpt-4"], actor=ACTOR)
    org.set_model_limits({"gpt-4o": {"output_tokens_per_minute": 10_000}}, actor=ACTOR)

    user = domain.User(str(org.id), "ada@acme.test", "Ada", None, False, False, actor=ACTOR)
    user.update_profile("Ada L.", "ada@acme.test", actor=ACTOR)
    user.link_subject("oidc:https://idp.acme.test:ada", actor=ACTOR)
    user.change_roles(False, True, actor=ACTOR)
    user.set_admin_at_sign_in(True, actor=ACTOR)
    user.set_limits({"input_tokens_per_minute": 50_000}, actor=ACTOR)
    user.set_budgets({"daily_tokens": 100_000}, actor=ACTOR)
    user.set_excluded_models(["o1"], actor=ACTOR)
    user.set_model_limits({"o3": {"requests_per_minute": 2}}, actor=ACTOR)
    user.accept_terms("2026-11", actor=ACTOR)
    user.deactivate(actor=ACTOR)
    user.reactivate(actor=ACTOR)

    team.update("research", "Research and development", actor=ACTOR)
    team.set_limits({"requests_per_minute": 40}, actor=ACTOR)
    team.set_budgets({"daily_usd": "2.5"}, actor=ACTOR)
    team.set_excluded_models(["gpt-4"], actor=ACTOR)
    team.set_model_limits({"gpt-4o": {"requests_per_minute": 10}}, actor=ACTOR)
    team.add_member(str(user.id), False, NOW, actor=ACTOR)
    team.promote_member(str(user.id), actor=ACTOR)
    team.demote_member(str(user.id), actor=ACTOR)
    team.remove_member(str(user.id), actor=ACTOR)

    account = domain.ServiceAccount(
        str(team.id), str(org.id), "ci", "The CI pipeline", str(user.id), actor=ACTOR
    )
    token = domain.Token.issue(
        "laptop", "9f86d081884c7d65", "aq-…k3Jd", str(user.id), None, str(team.id), str(org.id),
        NOW + timedelta(days=30), NOW, actor=ACTOR,
    )  # fmt: skip
    token.allow_management(actor=ACTOR)
    token.regenerate("60303ae22b998861", "aq-…q2Wx", actor=ACTOR)
    token.set_limits({"requests_per_minute": 5}, actor=ACTOR)
    token.change_expiry(None, NOW, actor=ACTOR)
    token.change_owner(ACTOR, actor=ACTOR)
    token.revoke(actor=ACTOR)
    account.attach_token(str(token.id), actor=ACTOR)
    account.update("ci", "Builds and tests", actor=ACTOR)
    account.transfer(ACTOR, actor=ACTOR)
    account.delete(actor=ACTOR)
    team.delete(actor=ACTOR)

    endpoint = domain.Endpoint("openai", "https://api.openai.com/v1", "openai", "OPENAI_API_KEY", actor=ACTOR)
    endpoint.update("https://api.openai.com/v1", "openai", "OPENAI_KEY_2", actor=ACTOR)
    endpoint.set_responses(False, actor=ACTOR)
    endpoint.remove(actor=ACTOR)
    model = domain.Model("gpt-4o", "openai", "gpt-4o-2024-08-06", "2.5", "10", ["gpt-4o-mini"], actor=ACTOR)
    model.update("openai", "gpt-4o-2024-11-20", "2.5", "10", [], actor=ACTOR)
    model.set_aliases(["claude-sonnet-4-5"], actor=ACTOR)
    model.set_token_prices({"cached_input_price_per_million": "1.25"}, actor=ACTOR)
    model.remove(actor=ACTOR)
    mcp = domain.McpServer("search", "https://mcp.acme.test/mcp", [str(team.id)], "SEARCH_TOKEN", actor=ACTOR)
    mcp.update("https://mcp.acme.test/v2/mcp", [], None, actor=ACTOR)
    mcp.remove(actor=ACTOR)
    terms = domain.TermsOfService(actor=ACTOR)
    terms.publish("2026-11", "https://acme.test/terms/2026-11", actor=ACTOR)

    events = []
    for aggregate in (org, team, user, account, token, endpoint, model, mcp, terms):
        events.extend(aggregate.collect_events())
    return events
