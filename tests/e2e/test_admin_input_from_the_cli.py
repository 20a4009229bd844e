"""An administrator's bad values, typed on the command line or written in a file for `aqueduct apply`,
are refused by the launched product with the field and the reason, and change nothing."""

from __future__ import annotations

import json

import pytest

from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_bad_values_from_the_cli_are_refused_with_the_field_and_change_nothing(
    stack: Stack, tmp_path
) -> None:
    stack.login_admin()
    # The CLI itself refuses a limit below 1; a 26-digit one passes it and the server says no.
    huge = stack.cli("orgs", "create", "huge-limit-org", "--rpm", "1" + "0" * 25, check=False)
    assert huge.returncode != 0
    assert "422" in huge.stderr and "limits.requests_per_minute" in huge.stderr, huge.stderr
    assert "at most 1,000,000,000,000" in huge.stderr
    orgs = json.loads(stack.cli("orgs", "list", "--format", "json").stdout)
    assert "huge-limit-org" not in {o["name"] for o in orgs}

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "endpoints:\n"
        "  - {slug: fine-one, url: 'http://127.0.0.1:9/v1'}\n"
        "  - {slug: Bad Slug!, url: 'http://127.0.0.1:9/v1'}\n"
    )
    refused = stack.cli("apply", str(bad), check=False)
    assert refused.returncode != 0
    assert "422" in refused.stderr and "endpoints[1].slug" in refused.stderr, refused.stderr
    endpoints = json.loads(stack.cli("endpoints", "list", "--format", "json").stdout)
    assert "fine-one" not in {e["slug"] for e in endpoints}  # the file was checked whole first
