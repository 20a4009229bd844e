"""``AQUEDUCT_TOKEN`` as users set it: pasted with a space, or read from a file with its newline."""

from __future__ import annotations

import pytest

from aqueduct_cli.client import ApiClient, CliError


@pytest.mark.parametrize("written", ["aq-abc123", " aq-abc123 ", "aq-abc123\n", "\taq-abc123\r\n"])
def test_the_token_from_the_environment_is_sent_without_surrounding_whitespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path, written: str
) -> None:
    monkeypatch.setenv("AQUEDUCT_CLI_HOME", str(tmp_path))
    monkeypatch.setenv("AQUEDUCT_TOKEN", written)
    assert ApiClient().bearer() == "aq-abc123"


def test_a_blank_token_in_the_environment_is_no_token(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AQUEDUCT_CLI_HOME", str(tmp_path))
    monkeypatch.setenv("AQUEDUCT_TOKEN", "  \n")
    with pytest.raises(CliError, match="not signed in"):
        ApiClient().bearer()
