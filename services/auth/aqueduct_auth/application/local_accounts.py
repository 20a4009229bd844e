"""Local accounts: the bootstrap admin of the embedded default, and optional extra local users."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from aqueduct_auth.adapters.passwords import Passwords
from aqueduct_auth.adapters.store import AuthStore, LocalAccount
from aqueduct_auth.application.ports import AttemptCounter, Events
from aqueduct_auth.application.sessions import Sessions, TokenPair
from aqueduct_auth.domain.accounts import check_new_account, check_password
from aqueduct_auth.domain.errors import (
    AccountExistsError,
    InvalidCredentialsError,
    InvalidFieldError,
    NoSuchAccountError,
    NotAllowedError,
    PasswordChangeRequiredError,
    SignInRateLimitedError,
)
from aqueduct_auth.domain.sign_in import SignInRequest
from aqueduct_libs.events import AuthEvent
from aqueduct_libs.sessions import SessionClaims

__all__ = ["LocalAccounts", "local_subject"]


def local_subject(username: str) -> str:
    return f"local:{username}"


def _one_time_password() -> str:
    return secrets.token_urlsafe(12)


def _require_admin(actor: SessionClaims, what: str) -> None:
    if not actor.admin:
        raise NotAllowedError(f"only an Admin can {what}")


class LocalAccounts:
    def __init__(
        self,
        store: AuthStore,
        passwords: Passwords,
        sessions: Sessions,
        events: Events,
        per_username: AttemptCounter,
        per_ip: AttemptCounter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._sessions = sessions
        self._events = events
        self._per_username = per_username
        self._per_ip = per_ip
        self._clock = clock

    async def ensure_bootstrap_admin(self, username: str, password: str) -> bool:
        """Create the configured admin on first start; an existing account is left as it is."""
        username = username.strip().lower()
        if self._store.get_account(username) is not None:
            return False
        account = LocalAccount(username, await self._passwords.hash(password), admin=True, name=username)
        return self._store.add_account(account, self._clock())

    async def add(
        self,
        actor: SessionClaims,
        username: str,
        password: str | None,
        email: str = "",
        name: str = "",
        groups: list[str] | None = None,
        admin: bool = False,
        must_change_password: bool | None = None,
    ) -> tuple[LocalAccount, str | None]:
        """Create an account. Without a password, a one-time password is made and returned (only here);
        the user must replace it at first sign-in (``must_change_password`` defaults to that: True for a
        made password, False for one the Admin chose)."""
        _require_admin(actor, "create local accounts")
        username, email, name, groups = check_new_account(username, email, name, groups or [])
        one_time = None
        if password is None:
            password = one_time = _one_time_password()
        check_password(password, "password")
        account = LocalAccount(
            username,
            await self._passwords.hash(password),
            admin,
            email,
            name or username,
            groups,
            must_change_password=one_time is not None
            if must_change_password is None
            else must_change_password,
        )
        if not self._store.add_account(account, self._clock()):
            raise AccountExistsError(f"local account {username!r} exists")
        return account, one_time

    def list(self, actor: SessionClaims) -> list[LocalAccount]:
        _require_admin(actor, "list local accounts")
        return self._store.list_accounts()

    async def reset_password(self, actor: SessionClaims, username: str) -> str:
        """A new one-time password for a user who forgot theirs; returned only here."""
        _require_admin(actor, "reset passwords")
        password = _one_time_password()
        if not self._store.set_password_hash(
            username.strip().lower(), await self._passwords.hash(password), must_change=True
        ):
            raise NoSuchAccountError(f"no local account {username!r}")
        return password

    async def change_password(
        self, username: str, password: str, new_password: str, client_ip: str | None
    ) -> None:
        """The user replaces their password (a one-time one included), proving the current one; the
        same attempt limits as sign-in apply."""
        username = username.strip().lower()
        account = await self._verified(username, password, client_ip)
        check_password(new_password, "new_password")
        if new_password == password:
            raise InvalidFieldError("new_password", "must differ from the current password")
        self._store.set_password_hash(account.username, await self._passwords.hash(new_password), False)

    async def _verified(self, username: str, password: str, client_ip: str | None) -> LocalAccount:
        now = self._clock()
        retry_after = max(
            await self._per_ip.check(f"ip:{client_ip}", now),
            await self._per_username.check(f"user:{username}", now),
        )
        if retry_after:
            await self._failed(username, client_ip, "rate_limited")
            raise SignInRateLimitedError(retry_after)
        account = self._store.get_account(username)
        if not await self._passwords.verify(account.password_hash if account else None, password):
            await self._failed(username, client_ip, "invalid_credentials")
            raise InvalidCredentialsError()
        assert account is not None  # verify() is False without an account
        return account

    async def sign_in(self, username: str, password: str, client_ip: str | None) -> TokenPair:
        username = username.strip().lower()
        account = await self._verified(username, password, client_ip)
        if account.must_change_password:
            raise PasswordChangeRequiredError()
        if self._passwords.needs_rehash(account.password_hash):
            self._store.set_password_hash(username, await self._passwords.hash(password))
        request = SignInRequest(
            subject=local_subject(username),
            email=account.email,
            name=account.name or username,
            groups=account.groups,
            admin=account.admin,
            email_verified=bool(account.email),  # set by the Admin who created the account
        )
        return await self._sessions.sign_in(request, "local", client_ip)

    async def _failed(self, username: str, client_ip: str | None, reason: str) -> None:
        await self._events.publish(
            AuthEvent(
                type="SignInFailed",
                subject=local_subject(username),
                method="local",
                client_ip=client_ip,
                reason=reason,
            )
        )
