"""Least privilege for the processes ``aqueduct up`` starts: each gets only the variables it needs.

- Every service: what a Python process needs to run (PATH, HOME, locale, TLS trust, proxies), the shared
  ``AQUEDUCT_*`` settings of ``CommonSettings`` (addresses, data folder, NATS URL, log level), and the
  variables of its own prefix (``AQUEDUCT_AUTH_*`` for auth, ...).
- The secret key (the keyed token hash, cookie keys) only to the services that use it, not to accounting.
- The bootstrap admin password (``AQUEDUCT_AUTH_BOOTSTRAP_*``) only to auth: it is auth's prefix.
- Provider API keys (the endpoints' ``api_key: ${VAR}`` variables) and anything else from outside the
  product only to the proxy and the batch worker, the two processes that call providers.
- The embedded engines (NATS, Valkey) get the process basics only.
"""

from __future__ import annotations

from collections.abc import Mapping

from aqueduct_libs.settings import CommonSettings

__all__ = ["ENGINE_ENV", "env_for_engine", "env_for_service"]

_BASICS = {
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "VIRTUAL_ENV", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SYSTEMROOT",
}  # fmt: skip
_BASIC_PREFIXES = ("LC_", "PYTHON", "LITELLM_", "COVERAGE_", "TIKTOKEN_")
ENGINE_ENV = _BASICS
# Services that call model providers; they alone see variables from outside the product.
_CALLS_PROVIDERS = {"proxy", "batch-worker"}
_USES_SECRET_KEY = {"directory", "auth", "proxy", "batch-worker", "ui"}
# A service's own settings prefix(es). The batch worker reads the proxy's settings (routes, Valkey).
_PREFIXES = {
    "directory": ("AQUEDUCT_DIRECTORY_",),
    "auth": ("AQUEDUCT_AUTH_",),
    "accounting": ("AQUEDUCT_ACCOUNTING_",),
    "proxy": ("AQUEDUCT_PROXY_",),
    "batch-worker": ("AQUEDUCT_BATCH_WORKER_", "AQUEDUCT_PROXY_"),
    # The UI shows "Sign in with SSO" when the auth service has an issuer.
    "ui": ("AQUEDUCT_UI_", "AQUEDUCT_AUTH_OIDC_ISSUER"),
}
_SECRET_KEY = "AQUEDUCT_SECRET_KEY"
_COMMON = {f"AQUEDUCT_{name.upper()}" for name in CommonSettings.model_fields} - {_SECRET_KEY}


def _basic(name: str) -> bool:
    return name in _BASICS or name.startswith(_BASIC_PREFIXES)


def env_for_service(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """The part of ``env`` (the launcher's complete environment for services) that ``service`` may see."""
    own = _PREFIXES[service]
    out = {}
    for name, value in env.items():
        if name == _SECRET_KEY:
            allowed = service in _USES_SECRET_KEY
        elif name in _COMMON or _basic(name) or name.startswith(own):
            allowed = True
        elif name.startswith("AQUEDUCT_"):
            allowed = False  # another service's settings (or the launcher's own)
        else:
            allowed = service in _CALLS_PROVIDERS
        if allowed:
            out[name] = value
    return out


def env_for_engine(env: Mapping[str, str]) -> dict[str, str]:
    """An embedded engine's environment: the process basics, no secret of the product."""
    return {name: value for name, value in env.items() if _basic(name)}
