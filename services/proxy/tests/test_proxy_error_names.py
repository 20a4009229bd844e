"""Names from the request are quoted back in error messages, but never whole when huge."""

from aqueduct_proxy.domain.errors import NAME_SHOWN, shown


def test_a_short_name_is_quoted_whole() -> None:
    assert shown("gpt-4o-mini") == "gpt-4o-mini"
    assert shown("m" * NAME_SHOWN) == "m" * NAME_SHOWN


def test_a_long_name_is_cut_with_its_length() -> None:
    quoted = shown("é" * 100_000)
    assert quoted == "é" * NAME_SHOWN + "... (100,000 characters)"
