"""No secret in any log: one filter every service installs (``configure_logging`` does it).

It rewrites each record before any handler writes it: passwords in URLs (``nats://proxy:PASSWORD@...``),
``Authorization`` headers, bearer tokens, the product's own tokens (``aq-`` API tokens, ``aqr-`` refresh
tokens, ``aqc-`` exchange codes), session JWTs, provider keys (``sk-...``), ``password=``/``secret=``/
``api_key=``-style pairs, and the exact values of the secrets this process was given in its environment.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

__all__ = ["REDACTED", "SecretsFilter", "install_redaction", "redact", "secret_values"]

REDACTED = "[redacted]"
_SCHEME = r"(?<![a-zA-Z0-9+.-])([a-zA-Z][a-zA-Z0-9+.-]*://)"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # userinfo of a URL: scheme://user:password@host -> scheme://user:[redacted]@host; scheme://token@host
    # A scheme starts where no scheme character precedes it: tried from every letter of a long word, the
    # search was quadratic (a 60,000-letter query string took seconds to log: a denial of service).
    (re.compile(rf"{_SCHEME}([^/\s:@]*):([^/\s@]+)@"), rf"\1\2:{REDACTED}@"),
    (re.compile(rf"{_SCHEME}([^/\s:@]{{16,}})@"), rf"\1{REDACTED}@"),
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',}]+"),
        rf"\1\2 {REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\1{REDACTED}"),
    (re.compile(r"\b(aq[rc]?-)[A-Za-z0-9_-]{16,}"), rf"\1{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"), REDACTED),
    (
        re.compile(r"([?&](?:code|state|token|access_token|id_token_hint|refresh_token)=)[^&\s\"']+"),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"\b(sk-(?:ant-)?)[A-Za-z0-9_-]{8,}"), rf"\1{REDACTED}"),
    (
        re.compile(
            r"(?i)\b((?:[a-z_]*_)?(?:password|passwd|secret|secret_key|api_key|apikey|access_token|"
            r"refresh_token|id_token|client_secret|token)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}]+)"
        ),
        rf"\1{REDACTED}",
    ),
]
_SECRET_NAMES = re.compile(r"(?i)(KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL)")
_URL_PASSWORD = re.compile(r"://[^/\s:@]*:([^/\s@]+)@")


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values in ``env`` that are secrets: of variables named like one, and passwords inside URLs."""
    found = set()
    for name, value in env.items():
        not_a_secret = name.upper().endswith(("_DIR", "_PATH", "_FILE", "_URL", "_PORT", "_HOST"))
        if _SECRET_NAMES.search(name) and not not_a_secret and len(value) >= 8:
            found.add(value)
        found.update(m for m in _URL_PASSWORD.findall(value) if len(m) >= 6)
    return sorted(found, key=len, reverse=True)


def redact(text: str, known: Iterable[str] = ()) -> str:
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretsFilter(logging.Filter):
    """Installed on handlers: rewrites the message, the exception text and the stack of every record."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        super().__init__()
        self.known = [value for value in known if value]

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and isinstance(record.msg, str):
            # The arguments stay a tuple of the same length: some formatters read them one by one
            # (uvicorn's access log unpacks client, method, path, ...). Each is redacted on its own.
            record.msg = redact(record.msg, self.known)
            record.args = tuple(redact(a, self.known) if isinstance(a, str) else a for a in record.args)
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: keep the template, drop the arguments
                message = str(record.msg)
            redacted = redact(message, self.known)
            if redacted != message:  # a secret only whole after formatting (split over arguments)
                record.msg, record.args = redacted, None
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: keep the template, drop the arguments
                message = str(record.msg)
            record.msg, record.args = redact(message, self.known), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.known)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.known)
        return True


def install_redaction(known: Iterable[str] = ()) -> SecretsFilter:
    """Redact every record of this process: as it is made (so loggers with handlers of their own, such as
    LiteLLM's, are covered too) and again in the root logger's handlers."""
    secrets_filter = SecretsFilter(known)
    previous = logging.getLogRecordFactory()
    if not getattr(previous, "aqueduct_redacts", False):

        def make_record(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            secrets_filter.filter(record)
            return record

        make_record.aqueduct_redacts = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(make_record)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretsFilter) for f in handler.filters):
            handler.addFilter(secrets_filter)
    return secrets_filter
