"""Outside the embedded development mode, a placeholder secret stops a service from starting."""

import pytest
from pydantic import ValidationError

from aqueduct_libs.settings import CommonSettings


@pytest.mark.parametrize(
    "value",
    [
        "changeme",
        "short-but-random-3f9a",
        "replace-with-64-hex-characters-from-openssl-rand-hex-32-xxxxxxxxxxxxxxxx",
        "my-example-key-that-is-long-enough-to-pass-the-length",
    ],
)
def test_placeholder_secret_keys_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="AQUEDUCT_SECRET_KEY must be a random value"):
        CommonSettings(secret_key=value, dev_mode=False)


def test_a_random_key_is_accepted_and_dev_mode_accepts_anything() -> None:
    key = "9f2c4e7a1b3d5f6e8a0c2e4f6a8b0d1e3f5a7c9e1b3d5f7a9c1e3f5a7b9d1f3e"
    assert CommonSettings(secret_key=key).secret_key_bytes == key.encode()
    assert CommonSettings(secret_key="", dev_mode=True).secret_key_bytes


def test_an_unset_key_is_refused_where_it_is_used() -> None:
    settings = CommonSettings(secret_key="", dev_mode=False)  # accounting: never given the key
    with pytest.raises(ValueError, match="AQUEDUCT_SECRET_KEY must be a random value"):
        _ = settings.secret_key_bytes
