"""Errors of the data plane, each one an OpenAI-format answer: the official SDK maps the status to its class."""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "BudgetExhaustedError",
    "ForbiddenError",
    "InvalidTokenError",
    "LimiterUnavailableError",
    "ModelNotFoundError",
    "PayloadTooLargeError",
    "ProxyError",
    "RateLimitedError",
    "RequestTooLargeError",
    "RouteNotFoundError",
    "StoreUnavailableError",
    "TermsNotAcceptedError",
    "UpstreamError",
]


class ProxyError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequestError(ProxyError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLargeError(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RouteNotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "unknown_url"


class InvalidTokenError(ProxyError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ForbiddenError(ProxyError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class TermsNotAcceptedError(ProxyError):
    status = 403
    type = "invalid_request_error"
    code = "terms_not_accepted"


NAME_SHOWN = 200  # characters of a client's name (model, endpoint) quoted back in an error message


def shown(name: str) -> str:
    """A name from the request as an error message quotes it: whole up to ``NAME_SHOWN`` characters, else
    its start and its length (a 100 KB model name is not echoed back whole)."""
    if len(name) <= NAME_SHOWN:
        return name
    return f"{name[:NAME_SHOWN]}... ({len(name):,} characters)"


class ModelNotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RateLimitedError(ProxyError):
    """A per-minute limit is used up; ``type`` names the dimension as OpenAI does ("requests" or
    "tokens"), ``Retry-After`` says when to try again."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, type: str = "requests", headers: dict[str, str] | None = None):
        super().__init__(message, headers=headers)
        self.type = type


class RequestTooLargeError(RateLimitedError):
    """The request alone needs more than a per-minute limit allows: no retry can succeed, so the answer
    has no ``Retry-After`` and tells the official SDKs not to retry (``x-should-retry: false``)."""


class BudgetExhaustedError(ProxyError):
    """A budget is spent until its period ends: the official SDKs are told not to retry."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        # Retrying cannot help before the budget resets: the official SDKs honour this header.
        super().__init__(message, param=param, headers={"x-should-retry": "false", **(headers or {})})


class LimiterUnavailableError(ProxyError):
    status = 503
    type = "server_error"
    code = "rate_limiter_unavailable"


class StoreUnavailableError(ProxyError):
    """A store on the bus (files, batches) is not open yet: the proxy started while a NATS cluster was
    electing its leader, and opens it in the background."""

    status = 503
    type = "server_error"
    code = "store_unavailable"


class UpstreamError(ProxyError):
    status = 502
    type = "server_error"
    code = "upstream_error"
