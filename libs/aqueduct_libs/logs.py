"""Logging set up the same way in every service; apart from ``ops`` so that a service without FastAPI
(the proxy) does not import it just to log (a second of its start on a busy machine)."""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType

from aqueduct_libs.redact import install_redaction, secret_values
from aqueduct_libs.request_id import RequestIdLogFilter

__all__ = ["configure_logging"]


def configure_logging(service: str, level: str = "INFO") -> None:
    """Log lines to stderr, each through the secrets filter (``aqueduct_libs.redact``), which knows the
    secret values of this process's environment. Uncaught exceptions go through it as well."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {service} %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    )
    install_redaction(secret_values(os.environ))

    def log_uncaught(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        logging.getLogger(service).critical("uncaught exception", exc_info=(kind, error, trace))

    sys.excepthook = log_uncaught
    for handler in logging.getLogger().handlers:  # the request being served, "-" outside one
        handler.addFilter(RequestIdLogFilter())
