"""Accounting's door, on the service as it runs: events with overflowing counts, dates before 1970 or far
in the future, impossible status codes or wrong types each go to the dead-letter stream with the reason;
the next good event is stored within a second; Admins list and re-drive dead letters over HTTP, counted
once however often; a restart starts cleanly."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import orjson
import pytest
from accounting_testing import AccountingProcess, SessionKeys, usage_event, wait_until

from aqueduct_libs import names
from aqueduct_libs.events import DeadLetter

pytestmark = [pytest.mark.nats, pytest.mark.chdb]


def _good(event_id: str) -> dict[str, Any]:
    return orjson.loads(usage_event(3, event_id=event_id).model_dump_json())


BAD: dict[str, tuple[dict[str, Any], str]] = {
    # name: (event, what the reason names)
    "overflowing count": ({**_good("bad-overflow"), "input_tokens": 2**63 - 1}, "input_tokens"),
    "count beyond 64 bits": ({**_good("bad-u64"), "output_tokens": 2**64 + 5}, "output_tokens"),
    "negative count": ({**_good("bad-negative"), "cached_tokens": -1}, "cached_tokens"),
    "before 1970": ({**_good("bad-1969"), "occurred_at": "1969-12-31T23:59:59+00:00"}, "occurred_at"),
    "far future": ({**_good("bad-future"), "occurred_at": "2250-01-01T00:00:00+00:00"}, "occurred_at"),
    "status 70000": ({**_good("bad-status"), "status_code": 70000}, "status_code"),
    "status 42": ({**_good("bad-status-low"), "status_code": 42}, "status_code"),
    "count as text": ({**_good("bad-type"), "input_tokens": "5"}, "input_tokens"),
    "user as number": ({**_good("bad-user"), "user_id": 5}, "user_id"),
    "latency as text": ({**_good("bad-latency"), "latency_ms": "fast"}, "latency_ms"),
    "kind as a list": ({**_good("bad-kind-list"), "kind": []}, "kind"),
    "kind as an object": ({**_good("bad-kind-object"), "kind": {"model": 1}}, "kind"),
}


def _get(service: AccountingProcess, token: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{service.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _post(service: AccountingProcess, token: str, path: str) -> httpx.Response:
    return httpx.post(f"{service.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _count(service: AccountingProcess, token: str, event_id: str) -> int:
    answer = service.sql(token, f"SELECT count() FROM usage_events WHERE event_id = '{event_id}'")
    return int(answer.json()["rows"][0][0]) if answer.status_code == 200 else -1


def _letters(service: AccountingProcess, token: str) -> list[dict[str, Any]]:
    answer = _get(service, token, "/api/dead-letters", limit=1000)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["dead_letters"])


async def test_out_of_bounds_events_are_dead_lettered_and_ingest_goes_on(
    js, accounting: AccountingProcess, admin_token: str, session_keys: SessionKeys
) -> None:
    for event, _ in BAD.values():
        await js.publish(names.USAGE_SUBJECT, json.dumps(event).encode())  # big ints as written
    # One message of three events, the middle one bad: the two good ones are stored.
    group = [_good("grp-0"), {**_good("grp-1"), "status_code": 1000}, _good("grp-2")]
    await js.publish(names.USAGE_SUBJECT, orjson.dumps(group))
    await js.publish(names.USAGE_SUBJECT, b"not json at all")

    published = time.monotonic()
    await js.publish(names.USAGE_SUBJECT, orjson.dumps(_good("next-good")))
    assert await wait_until(
        lambda: _count(accounting, admin_token, "next-good") == 1, within=10, interval=0.02
    )
    assert time.monotonic() - published < 1.0, "the good event behind the bad ones is stored within a second"
    assert _count(accounting, admin_token, "grp-0") == _count(accounting, admin_token, "grp-2") == 1

    expected = len(BAD) + 2
    assert await wait_until(lambda: len(_letters(accounting, admin_token)) == expected, within=10)
    letters = _letters(accounting, admin_token)
    by_event = {orjson.loads(x["payload"])["event_id"]: x for x in letters if x["payload"].startswith("{")}
    for name, (event, field) in BAD.items():
        letter = by_event[event["event_id"]]
        assert field in letter["reason"], (name, letter["reason"])
        assert letter["source_stream"] == names.USAGE_STREAM and letter["index"] is None
        assert _count(accounting, admin_token, event["event_id"]) == 0, f"{name} must not be stored"
    assert by_event["grp-1"]["index"] == 1 and "status_code" in by_event["grp-1"]["reason"]
    assert any(x["payload"] == "not json at all" and "JSON" in x["reason"] for x in letters)
    metrics = accounting.metrics()
    assert metrics["aqueduct_accounting_dead_letters_total"] == expected
    # Health that tells the truth: nothing is stuck or behind, and the newest stored event is fresh.
    assert metrics["aqueduct_accounting_not_ready"] == 0
    assert 0 <= metrics["aqueduct_accounting_last_stored_event_age_seconds"] < 120
    assert await wait_until(lambda: accounting.metrics()["aqueduct_accounting_consumer_lag"] == 0, within=15)

    # Only Admins see them.
    member = await session_keys.signed_in("user-1", name="Member")
    assert _get(accounting, member, "/api/dead-letters").status_code == 403
    assert _post(accounting, member, f"/api/dead-letters/{letters[0]['id']}/redrive").status_code == 403

    # One still bad: the re-drive says why, and the letter stays.
    still_bad = by_event["bad-status"]
    answer = _post(accounting, admin_token, f"/api/dead-letters/{still_bad['id']}/redrive")
    assert answer.status_code == 409 and "status_code" in answer.json()["detail"]
    assert _get(accounting, admin_token, f"/api/dead-letters/{still_bad['id']}").status_code == 200

    # A restart starts cleanly: nothing comes back, nothing is stored twice.
    accounting.stop()
    accounting.start()
    assert len(_letters(accounting, admin_token)) == expected
    assert _count(accounting, admin_token, "next-good") == 1
    assert accounting.metrics()["aqueduct_accounting_dead_letters_total"] == 0


async def test_a_fixed_dead_letter_is_redriven_and_counted_once(
    js, accounting: AccountingProcess, admin_token: str
) -> None:
    """A letter whose cause is gone (here: a valid event, as one dead-lettered while its table was lost
    would be) is stored by a re-drive, once, even when the same event is re-driven again."""
    event = _good("fixed-1")
    for sequence in (900_001, 900_002):  # the same event dead-lettered twice
        letter = DeadLetter(
            source_stream=names.USAGE_STREAM,
            source_subject=names.USAGE_SUBJECT,
            source_sequence=sequence,
            consumer="accounting-usage",
            reason="UNKNOWN_TABLE (simulated)",
            payload=orjson.dumps(event).decode(),
        )
        await js.publish(
            names.dead_letter_subject(names.USAGE_STREAM, sequence), letter.model_dump_json().encode()
        )
    fixed = [x for x in _letters(accounting, admin_token) if x["reason"] == "UNKNOWN_TABLE (simulated)"]
    assert len(fixed) == 2

    first = _post(accounting, admin_token, f"/api/dead-letters/{fixed[0]['id']}/redrive")
    assert first.status_code == 200, first.text
    assert _get(accounting, admin_token, f"/api/dead-letters/{fixed[0]['id']}").status_code == 404
    assert _post(accounting, admin_token, f"/api/dead-letters/{fixed[0]['id']}/redrive").status_code == 404
    everything = _post(accounting, admin_token, "/api/dead-letters/redrive")
    assert everything.status_code == 200
    assert fixed[1]["id"] in everything.json()["redriven"]
    assert all(f["reason"] for f in everything.json()["failed"])  # the bad ones stay, each with its reason

    assert _count(accounting, admin_token, "fixed-1") == 1
    assert not [x for x in _letters(accounting, admin_token) if x["reason"] == "UNKNOWN_TABLE (simulated)"]
    assert accounting.metrics()["aqueduct_accounting_redriven_dead_letters_total"] == 2


async def test_an_unreadable_directory_event_is_dead_lettered_and_the_mirror_goes_on(
    js, accounting: AccountingProcess, admin_token: str
) -> None:
    good = {
        "notification_id": 424242,
        "type": "OrgRenamed",
        "aggregate_type": "Org",
        "aggregate_id": "org-dl",
        "aggregate_version": 2,
        "actor": "admin-1",
        "occurred_at": "2026-06-01T10:00:00+00:00",
        "data": {"name": "renamed"},
    }
    bad = {**good, "notification_id": "not a number"}
    await js.publish(names.directory_event_subject("OrgRenamed"), orjson.dumps(bad))
    await js.publish(names.directory_event_subject("OrgRenamed"), orjson.dumps(good))

    def mirrored() -> bool:
        answer = accounting.sql(
            admin_token, "SELECT count() FROM directory_events WHERE notification_id = 424242"
        )
        return answer.status_code == 200 and answer.json()["rows"] == [[1]]

    assert await wait_until(mirrored, within=15)

    def letter() -> dict[str, Any] | None:
        found = [
            x
            for x in _letters(accounting, admin_token)
            if x["source_stream"] == names.DIRECTORY_EVENTS_STREAM
        ]
        return found[0] if found else None

    assert await wait_until(lambda: letter() is not None, within=10)
    found = letter()
    assert found is not None and "notification_id" in found["reason"]
    assert found["consumer"] == "accounting-directory" and orjson.loads(found["payload"]) == bad
