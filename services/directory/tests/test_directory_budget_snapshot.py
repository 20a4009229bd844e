"""Budgets reach the proxy and accounting through the auth snapshot: one ``budget.<scope>.<id>`` entry per
org, team and user with budgets, in integer nano-dollars and tokens; a removed budget deletes its entry,
and a replay into an empty bucket writes the same entries."""

from __future__ import annotations

import nats
import pytest
from directory_testkit import common_settings, make_world, wait_until

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_directory.adapters.projection import compute_snapshot
from aqueduct_directory.bootstrap import bootstrap
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_directory.settings import DirectorySettings
from aqueduct_libs import names
from aqueduct_libs.bus import read_bucket
from aqueduct_libs.snapshot import BudgetRule

pytestmark = pytest.mark.nats


@pytest.fixture
async def service(tmp_path):
    bus = EmbeddedNats(tmp_path / "nats").start()
    svc = await bootstrap(DirectorySettings(common=common_settings(bus.url, tmp_path / "data")))
    await svc.start()
    await wait_until(svc.ready)
    nc = await nats.connect(bus.url)
    yield svc, nc
    await nc.drain()
    await svc.stop()
    bus.stop()


async def _budgets(nc) -> dict[str, BudgetRule]:
    return {
        key: BudgetRule.model_validate_json(value)
        for key, value in (await read_bucket(nc.jetstream(), names.AUTH_SNAPSHOT_BUCKET)).items()
        if key.startswith(names.SNAPSHOT_BUDGET_PREFIX)
    }


async def test_budgets_are_snapshot_entries_of_their_own(service):
    svc, nc = service
    app = svc.directory
    world = make_world(app)
    app.update_org(SYSTEM, world.org, budgets={"monthly_usd": "100"})
    app.update_team(SYSTEM, world.team, budgets={"daily_usd": "0.05", "daily_tokens": 20_000})
    app.update_user(SYSTEM, world.member, budgets={"monthly_usd": "0.002"})
    team_key = names.snapshot_budget_key("team", world.team)
    await wait_until(lambda: svc.projector.published.get(team_key) is not None)
    await wait_until(lambda: svc.projector._meta_position == app.state.position)

    budgets = await _budgets(nc)
    assert budgets == {
        names.snapshot_budget_key("org", world.org): BudgetRule(
            scope="org", scope_id=world.org, name="acme", monthly_nanos=100_000_000_000
        ),
        team_key: BudgetRule(
            scope="team", scope_id=world.team, name="research", daily_nanos=50_000_000, daily_tokens=20_000
        ),
        names.snapshot_budget_key("user", world.member): BudgetRule(
            scope="user", scope_id=world.member, name="Member", monthly_nanos=2_000_000
        ),
    }
    # A renamed team: its entry carries the new name (refusals name the budget by it).
    app.update_team(SYSTEM, world.team, name="lenses")
    await wait_until(lambda: b'"lenses"' in (svc.projector.published.get(team_key) or b""))
    assert (await _budgets(nc))[team_key].name == "lenses"
    # A budget removed: its entry goes (the org-wide recompute keeps the others).
    app.update_team(SYSTEM, world.team, budgets={})
    await wait_until(lambda: team_key not in svc.projector.published)
    assert team_key not in await _budgets(nc)
    # What a replay would write is what the live projection wrote.
    await wait_until(lambda: svc.projector._meta_position == app.state.position)
    replayed = {
        k: BudgetRule.model_validate_json(v)
        for k, v in compute_snapshot(app.state).items()
        if k.startswith(names.SNAPSHOT_BUDGET_PREFIX)
    }
    assert replayed == await _budgets(nc)
