"""Helpers shared by the directory's tests: an application on a fresh SQLite file, and a small world."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aqueduct_directory.adapters.persistence import event_store_env
from aqueduct_directory.application import DirectoryApp
from aqueduct_directory.domain.policy import SYSTEM, Principal

SECRET = b"test-secret-key-that-is-long-enough-0123"


class Clock:
    """A clock the tests move by hand, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def make_app(path: Path | None, clock: Clock | None = None, **kwargs: object) -> DirectoryApp:
    """``path=None``: an in-memory SQLite store, for tests that need many fresh worlds."""
    url = f"sqlite:///{path / 'directory.sqlite'}" if path else "sqlite:///:memory:"
    return DirectoryApp(
        env=event_store_env(url, path or Path(".")),
        secret_key=SECRET,
        clock=clock or Clock(),
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass
class World:
    """One org with two teams, and one user per role (plus an outsider in another org)."""

    app: DirectoryApp
    org: str
    other_org: str
    team: str
    other_team: str
    admin: str
    org_admin: str
    team_admin: str
    member: str
    outsider: str

    def p(self, user_id: str) -> Principal:
        return self.app.principal(user_id)

    def events(self) -> int:
        return self.app.recorder.max_notification_id() or 0


def make_world(app: DirectoryApp) -> World:
    org = app.create_org(SYSTEM, "acme", "staff", {"requests_per_minute": 60})["id"]
    other_org = app.create_org(SYSTEM, "globex", "globex-staff")["id"]
    admin = app.create_user(SYSTEM, org, "admin@acme.test", "Admin", admin=True)["id"]
    org_admin = app.create_user(SYSTEM, org, "oa@acme.test", "Org Admin", org_admin=True)["id"]
    team_admin = app.create_user(SYSTEM, org, "ta@acme.test", "Team Admin")["id"]
    member = app.create_user(SYSTEM, org, "member@acme.test", "Member")["id"]
    outsider = app.create_user(SYSTEM, other_org, "x@globex.test", "Outsider")["id"]
    team = app.create_team(SYSTEM, org, "research", "Research")["id"]
    other_team = app.create_team(SYSTEM, org, "ops", "Operations")["id"]
    app.add_member(SYSTEM, team, team_admin, team_admin=True)
    app.add_member(SYSTEM, team, member)
    return World(app, org, other_org, team, other_team, admin, org_admin, team_admin, member, outsider)


def common_settings(nats_url: str, data_dir: Path, config_file: Path | None = None):
    from aqueduct_libs.settings import CommonSettings

    return CommonSettings(
        dev_mode=True,
        nats_url=nats_url,
        data_dir=data_dir,
        secret_key=SECRET.decode(),
        config_file=config_file,
    )


async def wait_until(predicate, within: float = 20.0, interval: float = 0.01) -> float:
    """Polls ``predicate`` (sync or async); returns the seconds it took, fails after ``within`` seconds."""
    import asyncio
    import inspect
    import time

    started = time.perf_counter()
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.perf_counter() - started
        if time.perf_counter() - started > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)
