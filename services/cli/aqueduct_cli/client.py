"""How the CLI finds the services and signs in.

Service URLs come from ``AQUEDUCT_<SVC>_URL`` or, for the one-machine setup, from the runtime file that
``aqueduct up`` writes into its data folder. ``aqueduct login`` keeps the session (access and refresh
tokens, never a password) in ``$AQUEDUCT_CLI_HOME/credentials.json`` (default ``~/.config/aqueduct``),
readable by the user only. ``AQUEDUCT_TOKEN`` (a session token, or an API token created with ``--management``) overrides it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ApiClient", "CliError", "credentials_path", "service_urls"]

SERVICE_NAMES = ("directory", "auth", "accounting", "proxy", "ui")


class CliError(Exception):
    """Something the user must fix; printed without a traceback."""


def _data_dir() -> Path:
    return Path(os.environ.get("AQUEDUCT_DATA_DIR", ".aqueduct"))


def service_urls() -> dict[str, str]:
    urls: dict[str, str] = {}
    runtime = _data_dir() / "runtime.json"
    if runtime.exists():
        urls.update(json.loads(runtime.read_text()).get("urls", {}))
    for name in SERVICE_NAMES:
        if value := os.environ.get(f"AQUEDUCT_{name.upper()}_URL"):
            urls[name] = value
    return urls


def credentials_path() -> Path:
    home = Path(os.environ.get("AQUEDUCT_CLI_HOME", Path.home() / ".config" / "aqueduct"))
    return home / "credentials.json"


class ApiClient:
    def __init__(self) -> None:
        self.urls = service_urls()
        self._http = httpx.Client(timeout=30.0)

    def url(self, service: str) -> str:
        if service not in self.urls:
            raise CliError(
                f"no URL for the {service} service: run `aqueduct up` in this folder, or set "
                f"AQUEDUCT_{service.upper()}_URL"
            )
        return self.urls[service].rstrip("/")

    # ---- credentials ------------------------------------------------------------------------

    def _load_credentials(self) -> dict[str, Any]:
        path = credentials_path()
        if not path.exists():
            return {}
        return dict(json.loads(path.read_text()).get(self.url("auth"), {}))

    def _save_credentials(self, tokens: dict[str, Any]) -> None:
        path = credentials_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        everything = json.loads(path.read_text()) if path.exists() else {}
        if tokens:
            everything[self.url("auth")] = {
                "access_token": tokens["access_token"],
                "refresh_token": tokens.get("refresh_token"),
                "expires_at": time.time() + float(tokens.get("expires_in", 0)),
            }
        else:
            everything.pop(self.url("auth"), None)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(everything, handle)

    def login(self, username: str, password: str) -> None:
        answer = self._http.post(
            f"{self.url('auth')}/auth/token", json={"username": username, "password": password}
        )
        self._raise_for(answer)
        self._save_credentials(answer.json())

    def logout(self) -> None:
        credentials = self._load_credentials()
        if credentials.get("refresh_token"):
            self._http.post(
                f"{self.url('auth')}/auth/logout", json={"refresh_token": credentials["refresh_token"]}
            )
        self._save_credentials({})

    def bearer(self) -> str:
        if token := os.environ.get("AQUEDUCT_TOKEN"):
            return token
        credentials = self._load_credentials()
        if not credentials:
            raise CliError("not signed in: run `aqueduct login` first")
        if credentials.get("expires_at", 0) - 30 < time.time():
            if not credentials.get("refresh_token"):
                raise CliError("session expired: run `aqueduct login` again")
            answer = self._http.post(
                f"{self.url('auth')}/auth/refresh", json={"refresh_token": credentials["refresh_token"]}
            )
            if answer.status_code != 200:
                raise CliError("session expired: run `aqueduct login` again")
            self._save_credentials(answer.json())
            credentials = self._load_credentials()
        return str(credentials["access_token"])

    # ---- requests -----------------------------------------------------------------------------

    @staticmethod
    def _raise_for(answer: httpx.Response) -> None:
        if answer.status_code < 400:
            return
        try:
            body = answer.json()
        except ValueError:
            body = {"detail": answer.text}
        detail = body.get("detail") if isinstance(body, dict) else body
        if isinstance(body, dict) and "error" in body and isinstance(body["error"], dict):
            detail = body["error"].get("message")
        raise CliError(f"{answer.status_code}: {detail}")

    def request(self, method: str, service: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.bearer()}", **kwargs.pop("headers", {})}
        try:
            answer = self._http.request(method, f"{self.url(service)}{path}", headers=headers, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach the {service} service at {self.url(service)}: {exc}") from exc
        self._raise_for(answer)
        if answer.status_code == 204 or not answer.content:
            return None
        if answer.headers.get("content-type", "").startswith("application/json"):
            return answer.json()
        return answer.text
