"""How the CLI finds the services and signs in.

Service URLs come, last one winning, from the runtime file that the running ``aqueduct up`` records in
the user's config folder (so the CLI works from any folder), the runtime file in the data folder
(``AQUEDUCT_DATA_DIR``, default ``./.aqueduct``), ``AQUEDUCT_<SVC>_URL``, and the ``--<svc>-url`` flags. ``aqueduct login`` keeps the session (access and refresh
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

__all__ = [
    "SERVICE_NAMES",
    "ApiClient",
    "CliError",
    "PasswordChangeRequired",
    "cli_home",
    "credentials_path",
    "forget_running_product",
    "record_running_product",
    "service_urls",
]

SERVICE_NAMES = ("directory", "auth", "accounting", "proxy", "ui")


class CliError(Exception):
    """Something the user must fix; printed without a traceback."""


class PasswordChangeRequired(CliError):
    """The password was a one-time password: the user must choose their own before signing in."""


def _data_dir() -> Path:
    return Path(os.environ.get("AQUEDUCT_DATA_DIR", ".aqueduct"))


def cli_home() -> Path:
    return Path(os.environ.get("AQUEDUCT_CLI_HOME", Path.home() / ".config" / "aqueduct"))


def _running_file() -> Path:
    return cli_home() / "running.json"


def _urls_in(path: Path) -> dict[str, str]:
    try:
        urls = json.loads(path.read_text()).get("urls", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in urls.items() if isinstance(k, str) and isinstance(v, str)}


def service_urls() -> dict[str, str]:
    urls = _urls_in(_running_file())
    urls.update(_urls_in(_data_dir() / "runtime.json"))
    for name in SERVICE_NAMES:
        if value := os.environ.get(f"AQUEDUCT_{name.upper()}_URL"):
            urls[name] = value
    return urls


def record_running_product(urls: dict[str, str], data_dir: Path, pid: int) -> None:
    """``aqueduct up`` tells CLIs run from any other folder where it is (URLs only, no secret)."""
    path = _running_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"urls": urls, "data_dir": str(data_dir.resolve()), "pid": pid}, indent=2))


def forget_running_product(pid: int) -> None:
    """On stop, unless another ``aqueduct up`` has recorded itself since."""
    path = _running_file()
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def credentials_path() -> Path:
    return cli_home() / "credentials.json"


def _code(answer: httpx.Response) -> str | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


class ApiClient:
    def __init__(self) -> None:
        self.urls = service_urls()
        self._http = httpx.Client(timeout=30.0)

    def url(self, service: str) -> str:
        if service not in self.urls:
            raise CliError(
                f"no URL for the {service} service: is `aqueduct up` running? Otherwise pass "
                f"--{service}-url or set AQUEDUCT_{service.upper()}_URL"
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
        if answer.status_code == 403 and _code(answer) == "password_change_required":
            raise PasswordChangeRequired("a new password must be chosen")
        self._raise_for(answer)
        self._save_credentials(answer.json())

    def change_password(self, username: str, password: str, new_password: str) -> None:
        answer = self._http.post(
            f"{self.url('auth')}/auth/password",
            json={"username": username, "password": password, "new_password": new_password},
        )
        self._raise_for(answer)

    def logout(self) -> None:
        credentials = self._load_credentials()
        try:
            if credentials.get("refresh_token"):
                self._http.post(
                    f"{self.url('auth')}/auth/logout", json={"refresh_token": credentials["refresh_token"]}
                )
        finally:  # the product may be down: the session is forgotten here all the same
            self._save_credentials({})

    def bearer(self) -> str:
        # A token pasted into a .env file or read with its newline works as the same token.
        if token := os.environ.get("AQUEDUCT_TOKEN", "").strip():
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

    def request_page(self, method: str, service: str, path: str, **kwargs: Any) -> tuple[Any, int]:
        """A list route's answer and its ``X-Total-Count``."""
        answer = self._send(method, service, path, **kwargs)
        total = int(answer.headers.get("x-total-count", "0") or 0)
        return answer.json(), total

    def _send(self, method: str, service: str, path: str, **kwargs: Any) -> httpx.Response:
        base = self.url(service)  # first: "where is the product?" comes before "who are you?"
        headers = {"Authorization": f"Bearer {self.bearer()}", **kwargs.pop("headers", {})}
        try:
            answer = self._http.request(method, f"{base}{path}", headers=headers, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(f"cannot reach the {service} service at {self.url(service)}: {exc}") from exc
        self._raise_for(answer)
        return answer

    def request(self, method: str, service: str, path: str, **kwargs: Any) -> Any:
        answer = self._send(method, service, path, **kwargs)
        if answer.status_code == 204 or not answer.content:
            return None
        if answer.headers.get("content-type", "").startswith("application/json"):
            return answer.json()
        return answer.text
