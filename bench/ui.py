"""UI benchmark: the server time of every page, per role, in an org the size of a university.

    .venv/bin/python bench/ui.py [--users 20000] [--teams 1000] [--tokens 100000] [--rounds 20]

Starts the product with ``aqueduct up`` in a temporary folder (against the test upstream), seeds one org
through the public management APIs (``--users`` users spread over ``--teams`` teams, ``--tokens`` tokens
spread over the users; seeding is not timed), signs in one person per role (Admin, Org-Admin, Team-Admin,
User) through the login form, then requests every page ``--rounds`` times per role and prints p50 and p95
of the time to the complete answer. Seeding the full size through the APIs takes long on a busy machine:
smoke-run it with ``--users 200 --teams 10 --tokens 500 --rounds 3``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aqueduct_cli.embedded import free_port, wait_for_port  # noqa: E402
from tests.support.stack import Stack, write_config  # noqa: E402

PASSWORD = "bench-password-0123456789"
PAGES = {
    "Admin": [
        "/",
        "/teams",
        "/teams/{team}",
        "/models",
        "/usage",
        "/usage?group_by=user",
        "/users",
        "/admin",
        "/admin/audit",
    ],
    "Org-Admin": ["/", "/teams", "/teams/{team}", "/models", "/usage", "/usage?group_by=user", "/users"],
    "Team-Admin": ["/", "/teams", "/teams/{team}", "/models", "/usage", "/usage?group_by=user"],
    "User": ["/", "/teams", "/teams/{team}", "/models", "/usage"],
}


async def _bulk(calls, concurrency: int = 16) -> list:
    gate = asyncio.Semaphore(concurrency)

    async def one(call):
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def seed(stack: Stack, users: int, teams: int, tokens: int) -> dict[str, str]:
    """People per role (local accounts) and the org at size; returns role -> username and the team id."""
    async with httpx.AsyncClient(timeout=60) as http:
        pair = await http.post(
            f"{stack.urls['auth']}/auth/token",
            json={"username": stack.admin_username, "password": stack.admin_password},
        )
        admin = {"Authorization": f"Bearer {pair.json()['access_token']}"}
        directory = stack.urls["directory"]
        me = (await http.get(f"{directory}/api/me", headers=admin)).json()
        org_id = me["org_id"]

        async def post(path: str, body: dict, headers: dict = admin) -> dict:
            answer = await http.post(f"{directory}{path}", json=body, headers=headers)
            if answer.status_code >= 400:
                raise SystemExit(f"seeding failed: POST {path}: {answer.status_code} {answer.text[:300]}")
            return answer.json()

        team_ids = [
            t["id"]
            for t in await _bulk(
                [
                    lambda i=i: post("/api/teams", {"org_id": org_id, "name": f"team-{i:04d}"})
                    for i in range(teams)
                ]
            )
        ]
        user_ids = [
            u["id"]
            for u in await _bulk(
                [
                    lambda i=i: post(
                        "/api/users", {"email": f"u{i}@uni.example", "name": f"User {i}", "org_id": org_id}
                    )
                    for i in range(users)
                ]
            )
        ]
        await _bulk(
            [
                lambda i=i, u=u: post(f"/api/teams/{team_ids[i % teams]}/members", {"user_id": u})
                for i, u in enumerate(user_ids)
            ]
        )
        # The service accounts' creator owns them, so must be a member of each team.
        await _bulk([lambda t=t: post(f"/api/teams/{t}/members", {"user_id": me["id"]}) for t in team_ids])
        # Personal tokens would need each owner to sign in (and are capped per user): the tokens are those
        # of service accounts (one token each), spread evenly over the teams.
        await _bulk(
            [
                lambda i=i: post(
                    f"/api/teams/{team_ids[i % teams]}/service-accounts",
                    {"name": f"bench-{i}", "description": "bench"},
                )
                for i in range(tokens)
            ]
        )

        roles: dict[str, str] = {"Admin": stack.admin_username}
        for role, flags in (("Org-Admin", {"org_admin": True}), ("Team-Admin", {}), ("User", {})):
            name = role.lower()
            person = await post(
                "/api/users",
                {"email": f"{name}@uni.example", "name": f"Bench {role}", "org_id": org_id, **flags},
            )
            account = await http.post(
                f"{stack.urls['auth']}/auth/local-users",
                json={
                    "username": name,
                    "password": PASSWORD,
                    "email": f"{name}@uni.example",
                    "name": f"Bench {role}",
                },
                headers=admin,
            )
            account.raise_for_status()
            if role != "Org-Admin":
                await post(
                    f"/api/teams/{team_ids[0]}/members",
                    {"user_id": person["id"], "team_admin": role == "Team-Admin"},
                )
            roles[role] = name
        roles["team"] = team_ids[0]
        return roles


async def signed_in(ui: str, username: str, password: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=ui, timeout=120, follow_redirects=False)
    form = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    answer = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf.group(1) if csrf else ""},
    )
    if answer.status_code not in (302, 303):
        raise SystemExit(f"{username} could not sign in: {answer.status_code} {answer.text[:200]}")
    return client


async def measure(stack: Stack, roles: dict[str, str], rounds: int) -> None:
    print(f"{'role':<11} {'page':<24} {'p50 ms':>8} {'p95 ms':>8}")
    for role, pages in PAGES.items():
        password = stack.admin_password if role == "Admin" else PASSWORD
        client = await signed_in(stack.urls["ui"], roles[role], password)
        try:
            for template in pages:
                page = template.format(team=roles["team"])
                times = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    answer = await client.get(page)
                    times.append((time.perf_counter() - started) * 1000)
                    if answer.status_code != 200:
                        raise SystemExit(f"{role} {page}: {answer.status_code}")
                times.sort()
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                print(f"{role:<11} {template:<24} {statistics.median(times):>8.0f} {p95:>8.0f}", flush=True)
        finally:
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--teams", type=int, default=1_000)
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as folder:
        work = Path(folder)
        port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "tests.support.upstream", "--port", str(port)], cwd=ROOT
        )
        wait_for_port("127.0.0.1", port, process=upstream)
        per_team = str(max(50, -(-args.tokens // max(1, args.teams))))  # every token a service account's
        stack = Stack(
            work,
            write_config(work / "aqueduct.yaml", f"http://127.0.0.1:{port}/v1"),
            env={"AQUEDUCT_DIRECTORY_MAX_SERVICE_ACCOUNTS_PER_TEAM": per_team},
        ).start()
        try:
            started = time.perf_counter()
            roles = asyncio.run(seed(stack, args.users, args.teams, args.tokens))
            print(
                f"seeded {args.users} users, {args.teams} teams, {args.tokens} tokens "
                f"in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            asyncio.run(measure(stack, roles, args.rounds))
        finally:
            stack.stop()
            upstream.terminate()
            upstream.wait(10)


if __name__ == "__main__":
    main()
