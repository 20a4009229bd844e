"""The logging filter every service installs: secrets never reach a log line."""

from __future__ import annotations

import io
import logging

import pytest

from aqueduct_libs.redact import REDACTED, SecretsFilter, install_redaction, redact, secret_values

SECRETS = {
    "nats password": (
        "NATS at %s not reachable",
        ("nats://proxy:4f9c2b7a1d3e5f60@127.0.0.1:4222",),
        "4f9c2b7a1d3e5f60",
    ),
    "redis password": ("limiter %s", ("redis://:v4lk3y-pa55w0rd@127.0.0.1:6379/0",), "v4lk3y-pa55w0rd"),
    "nats token": ("bus %s", ("nats://0123456789abcdef0123@127.0.0.1:4222",), "0123456789abcdef0123"),
    "authorization header": (
        "headers %s",
        ({"Authorization": "Bearer aq-S3cr3tT0kenValue1234567890"},),
        "S3cr3tT0ken",
    ),
    "bearer in text": ("sent Bearer abc.def-ghi_jkl to upstream", (), "abc.def-ghi_jkl"),
    "api token": (
        "token %s refused",
        ("aq-Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA",),
        "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA",
    ),
    "refresh token": (
        "refresh %s",
        ("aqr-Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA",),
        "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA",
    ),
    "session jwt": (
        "session %s",
        ("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJlLXZhbHVl",),
        "eyJzdWIiOiJ1LTEifQ",
    ),
    "provider key": ("upstream key %s", ("sk-proj-1234567890abcdef",), "1234567890abcdef"),
    "password pair": ("login password=hunter2hunter2 user=alice", (), "hunter2hunter2"),
    "secret in json": ('{"client_secret": "dex-s3cret-value"}', (), "dex-s3cret-value"),
    "oidc code in a URL": ("GET /auth/oidc/callback?code=c0de-v4lue&state=st4te HTTP/1.1", (), "c0de-v4lue"),
}


@pytest.mark.parametrize("case", SECRETS.values(), ids=SECRETS.keys())
def test_each_kind_of_secret_is_redacted(case: tuple[str, tuple, str]) -> None:
    template, args, secret = case
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretsFilter())
    logger = logging.getLogger(f"redact-test-{secret}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(template, *args)
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert secret not in line
    assert REDACTED in line


def test_known_values_and_exception_texts_are_redacted() -> None:
    env = {"AQUEDUCT_SECRET_KEY": "k" * 40, "OPENAI_API_KEY": "plainkeyvalue99", "PATH": "/usr/bin"}
    known = secret_values(env)
    assert "/usr/bin" not in known
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretsFilter(known))
    logger = logging.getLogger("redact-test-exc")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise RuntimeError(f"cannot use key {'k' * 40} or plainkeyvalue99")
    except RuntimeError:
        logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "k" * 40 not in text and "plainkeyvalue99" not in text
    assert "RuntimeError" in text


def test_ordinary_lines_are_left_alone() -> None:
    line = "usage stored: 5 input_tokens, token_id=tok-1, model=gpt-4o, http://127.0.0.1:8001/readyz"
    assert redact(line) == line


def test_a_logger_with_its_own_handler_is_redacted_too() -> None:
    """Libraries such as LiteLLM log through handlers of their own, not the root logger's."""
    stream = io.StringIO()
    own = logging.getLogger("redact-test-own-handler")
    own.addHandler(logging.StreamHandler(stream))
    own.propagate = False
    previous = logging.getLogRecordFactory()
    installed = None
    try:
        installed = install_redaction(["own-handler-secret-value"])
        own.warning("calling with api_key=sk-abcdef1234567890 and own-handler-secret-value")
    finally:
        logging.setLogRecordFactory(previous)
        own.handlers.clear()
        for handler in logging.getLogger().handlers:
            handler.removeFilter(installed)
    line = stream.getvalue()
    assert "abcdef1234567890" not in line and "own-handler-secret-value" not in line
    assert REDACTED in line


def test_a_long_word_is_redacted_in_linear_time() -> None:
    """A 60,000-letter query value took the URL patterns seconds (a scheme tried from every letter): a
    request's log line must not be a way to keep a service busy."""
    import time

    line = "GET /api/usage/summary?model=" + "m" * 200_000 + " token=aq-" + "x" * 20
    started = time.monotonic()
    assert redact(line).endswith(f"token={REDACTED}")
    assert time.monotonic() - started < 0.5
