"""Single sign-on against any OpenID Connect provider: authorization code flow with PKCE (authlib).

authlib keeps the state, nonce and PKCE verifier in the signed, short-lived cookie session of the
auth service's own origin; the ID token's signature, issuer, audience, expiry and nonce are checked by
``authorize_access_token``. Claims missing from the ID token (many providers put groups and email only
in userinfo) are taken from the userinfo endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.base_client import OAuthError
from authlib.integrations.starlette_client import OAuth
from starlette.requests import Request
from starlette.responses import RedirectResponse

from aqueduct_auth.domain.errors import SingleSignOnError
from aqueduct_auth.domain.sign_in import SignInRequest

__all__ = ["OidcClient", "OidcConfig", "OidcSignIn", "safe_next"]


class OidcConfig:
    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        scopes: str = "openid email profile groups",
        groups_claim: str = "groups",
        admin_group: str = "",
        trust_email: bool = False,
        post_logout_redirect_uri: str = "",
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.scopes = scopes
        self.groups_claim = groups_claim
        self.admin_group = admin_group
        # A single-tenant provider that does not send email_verified (Entra ID) can be trusted explicitly.
        self.trust_email = trust_email
        # Where the provider sends the browser after ending its session (RP-initiated logout); it must be
        # registered at the provider. Empty: no RP-initiated logout.
        self.post_logout_redirect_uri = post_logout_redirect_uri


@dataclass(frozen=True)
class OidcSignIn:
    """A completed single sign-on: who, where they were going, the starting browser's binding, and the
    provider's address that ends its own session too at sign-out (empty if it offers none)."""

    request: SignInRequest
    next_path: str
    binding: str
    end_session_url: str = ""


_BINDING = re.compile(r"[0-9a-f]{64}")


def safe_next(value: str | None) -> str:
    """Only paths inside the UI: ``//evil.example`` or ``https://...`` would make us an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


class OidcClient:
    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        oauth = OAuth()
        oauth.register(
            name="idp",
            client_id=config.client_id,
            client_secret=config.client_secret,
            server_metadata_url=f"{config.issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": config.scopes, "code_challenge_method": "S256"},
        )
        self._idp: Any = oauth.create_client("idp")

    async def login_redirect(self, request: Request, next_path: str | None, binding: str) -> RedirectResponse:
        """``binding``: the SHA-256 (hex) of the starting browser's secret (see ``sign_in_with_code``)."""
        if not _BINDING.fullmatch(binding):
            raise SingleSignOnError("start single sign-on from the sign-in page", "not_started_here")
        request.session["aqueduct_next"] = safe_next(next_path)
        request.session["aqueduct_binding"] = binding
        try:
            return await self._idp.authorize_redirect(request, self.config.redirect_uri)  # type: ignore[no-any-return]
        except Exception as exc:  # discovery failed: the provider is down or misconfigured
            raise SingleSignOnError(
                f"the identity provider is not reachable ({type(exc).__name__})", "idp_unreachable"
            ) from exc

    async def complete(self, request: Request) -> OidcSignIn:
        """The provider redirected back: validate, and say who signed in, where they were going, and the
        binding of the browser that started the sign-in."""
        next_path = safe_next(request.session.pop("aqueduct_next", None))
        binding = str(request.session.pop("aqueduct_binding", ""))
        try:
            token = await self._idp.authorize_access_token(request)
            claims: dict[str, Any] = dict(token.get("userinfo") or {})
            if not claims.get("sub"):
                raise SingleSignOnError("the identity provider sent no ID token")
            if self._lookup(claims, self.config.groups_claim) is None or not claims.get("email"):
                extra = await self._idp.userinfo(token=token)
                if extra.get("sub") == claims["sub"]:
                    claims = {**extra, **claims}  # the signed ID token wins where both say something
        except OAuthError as exc:
            raise SingleSignOnError(f"single sign-on failed: {exc.description or exc.error}") from exc
        if not _BINDING.fullmatch(binding):
            raise SingleSignOnError(
                "the sign-in was not started from the sign-in page; start again", "not_started_here"
            )
        groups = self._groups(claims)
        request_ = SignInRequest(
            subject=f"oidc:{self.config.issuer}:{claims['sub']}",
            email=str(claims.get("email") or ""),
            name=str(claims.get("name") or claims.get("preferred_username") or claims.get("email") or ""),
            groups=groups,
            admin=bool(self.config.admin_group) and self.config.admin_group in groups,
            email_verified=claims.get("email_verified") is True or self.config.trust_email,
        )
        return OidcSignIn(request_, next_path, binding, await self._end_session_url(token))

    async def _end_session_url(self, token: dict[str, Any]) -> str:
        """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), where the provider offers it."""
        if not self.config.post_logout_redirect_uri or not token.get("id_token"):
            return ""
        metadata = await self._idp.load_server_metadata()
        endpoint = str(metadata.get("end_session_endpoint") or "")
        if not endpoint:
            return ""
        query = urlencode(
            {
                "id_token_hint": token["id_token"],
                "post_logout_redirect_uri": self.config.post_logout_redirect_uri,
                "client_id": self.config.client_id,
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def _groups(self, claims: dict[str, Any]) -> list[str]:
        value = self._lookup(claims, self.config.groups_claim)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return [str(group) for group in value]

    @staticmethod
    def _lookup(claims: dict[str, Any], path: str) -> Any:
        """A claim by name, or by dotted path into nested claims (Keycloak's ``realm_access.roles``)."""
        if path in claims:
            return claims[path]
        value: Any = claims
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value
