"""The web layer on its own: CSRF, cookies, sign-in redirects, the session check, flash sealing.

The auth, directory and accounting services are not started here; the session token is signed with a
key generated in the test and verified by the real ``SessionVerifier``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm

from aqueduct_libs.sessions import SESSION_AUDIENCE, SESSION_ISSUER
from aqueduct_libs.settings import CommonSettings
from aqueduct_ui.bootstrap import bootstrap
from aqueduct_ui.entrypoints.web.cookies import ACCESS_COOKIE, CSRF_COOKIE, FLASH_COOKIE, CookieKit, Flash
from aqueduct_ui.settings import UISettings


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def client(signing_key: ec.EllipticCurvePrivateKey) -> Iterator[TestClient]:
    # Nothing listens on port 9: the downstream services are "down" for this test.
    common = CommonSettings(
        dev_mode=True,
        auth_url="http://127.0.0.1:9",
        directory_url="http://127.0.0.1:9",
        accounting_url="http://127.0.0.1:9",
    )
    app = asyncio.run(bootstrap(UISettings(common=common), use_bus=False)).app
    jwk = json.loads(ECAlgorithm.to_jwk(signing_key.public_key()))
    app.state.ctx.keyring.verifier.load_jwks({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]})
    with TestClient(app, base_url="http://ui.test", follow_redirects=False) as test_client:
        yield test_client


def session_token(key: ec.EllipticCurvePrivateKey, **claims: object) -> str:
    now = int(time.time())
    payload = {
        "sub": "user-1",
        "sid": "s1",
        "name": "Ada Lovelace",
        "email": "ada@example.org",
        "org": "org-1",
        "iss": SESSION_ISSUER,
        "aud": SESSION_AUDIENCE,
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": "k1"})


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, "the form carries a CSRF token"
    return match.group(1)


def test_a_visitor_is_sent_to_sign_in_and_back(client: TestClient) -> None:
    response = client.get("/?range=7d")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2F%3Frange%3D7d"


def test_the_login_page_is_a_labelled_form_with_a_csrf_token(client: TestClient) -> None:
    response = client.get("/login?next=/teams")
    assert response.status_code == 200
    html = response.text
    assert '<label for="username">Username</label>' in html
    assert '<label for="password">Password</label>' in html
    assert 'name="next" value="/teams"' in html
    assert csrf_from(html)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{CSRF_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Sign in with SSO" not in html  # OIDC is not configured here


def test_sso_button_points_at_the_auth_service_when_configured(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    common = CommonSettings(dev_mode=True, auth_url="https://auth.example.org")
    app = asyncio.run(bootstrap(UISettings(oidc_enabled=True, common=common), use_bus=False)).app
    with TestClient(app, follow_redirects=False) as client:
        html = client.get("/login?next=/models").text
        assert 'href="/login/sso?next=%2Fmodels"' in html
        started = client.get("/login/sso?next=/models")
    # The browser gets a secret (for /session/complete only); the auth service gets its SHA-256.
    assert started.status_code == 303
    secret = started.cookies["aq_sso"]
    binding = hashlib.sha256(secret.encode()).hexdigest()
    assert started.headers["location"] == (
        f"https://auth.example.org/auth/oidc/login?next=%2Fmodels&binding={binding}"
    )
    cookie = started.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Path=/session/complete" in cookie and "SameSite=lax" in cookie


def test_a_hand_off_link_opened_in_another_browser_is_refused() -> None:
    """Login CSRF: a browser that did not start the sign-in holds no secret, so it is not signed in."""
    common = CommonSettings(dev_mode=True, auth_url="http://127.0.0.1:9")  # nothing is asked of it
    app = asyncio.run(bootstrap(UISettings(oidc_enabled=True, common=common), use_bus=False)).app
    with TestClient(app, follow_redirects=False) as client:
        answer = client.get("/session/complete?code=aqx-someone-elses-code&next=/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/session/error?reason=not_started_here"
    assert "aq_session" not in answer.headers.get("set-cookie", "")


def test_the_sso_link_uses_the_public_auth_url_when_set() -> None:
    common = CommonSettings(dev_mode=True, auth_url="http://auth:8002")
    app = asyncio.run(
        bootstrap(
            UISettings(oidc_enabled=True, public_auth_url="https://auth.example.org/", common=common),
            use_bus=False,
        )
    ).app
    with TestClient(app, follow_redirects=False) as client:
        started = client.get("/login/sso")
    assert started.headers["location"].startswith(
        "https://auth.example.org/auth/oidc/login?next=%2F&binding="
    )


def test_sso_is_on_when_the_auth_service_has_an_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AQUEDUCT_AUTH_OIDC_ISSUER", raising=False)
    monkeypatch.delenv("AQUEDUCT_UI_OIDC_ENABLED", raising=False)
    assert not UISettings().sso_enabled
    monkeypatch.setenv("AQUEDUCT_AUTH_OIDC_ISSUER", "https://idp.example.org")
    assert UISettings().sso_enabled


def test_a_form_without_the_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/login")
    response = client.post(
        "/login", data={"username": "ada", "password": "x"}, headers={"referer": "http://ui.test/login"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    follow = client.get("/login")
    assert "The form had expired" in follow.text


def test_a_csrf_token_from_another_browser_is_refused(client: TestClient) -> None:
    token = csrf_from(client.get("/login").text)
    client.cookies.set(CSRF_COOKIE, "someone-elses-secret", domain="ui.test")
    response = client.post("/login", data={"username": "ada", "password": "x", "csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/"  # no referer: back to the start, nothing was attempted
    assert FLASH_COOKIE in response.headers.get("set-cookie", "")


def test_a_valid_form_reaches_the_auth_service_and_reports_it_down(client: TestClient) -> None:
    token = csrf_from(client.get("/login").text)
    response = client.post("/login", data={"username": "ada", "password": "x", "csrf_token": token})
    assert response.status_code == 400
    assert "The sign-in service is unavailable" in response.text
    assert 'value="ada"' in response.text  # the username is kept, the password is not


def test_pages_are_never_cached_nor_framed(client: TestClient) -> None:
    headers = client.get("/login").headers
    assert headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_open_redirects_are_refused(client: TestClient) -> None:
    html = client.get("/login?next=//evil.example/x").text
    assert 'name="next" value="/"' in html


def test_a_valid_session_is_recognised_and_the_api_outage_shown(
    client: TestClient, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    client.cookies.set(ACCESS_COOKIE, session_token(signing_key, admin=True), domain="ui.test")
    response = client.get("/")
    # Signed in (no redirect to /login); the directory is down, which the page says plainly.
    assert response.status_code == 503
    assert "Service unavailable" in response.text
    assert "Ada Lovelace" in response.text
    assert 'href="/admin"' in response.text  # an Admin sees the admin pages in the navigation


@pytest.mark.parametrize(
    ("address", "names"),
    [
        ("/admin/dead-letters?after=abc", "after"),
        ("/admin/audit?page=zero", "page"),
        ("/teams?page=-1", "page"),
        ("/users?page=2.5", "page"),
    ],
)
def test_a_bad_value_in_the_address_is_a_page_that_says_which(
    client: TestClient, signing_key: ec.EllipticCurvePrivateKey, address: str, names: str
) -> None:
    """A hand-edited or truncated link gets the UI's own error page naming the parameter, not FastAPI's
    JSON ({"detail": [{"type": "int_parsing", ...}]})."""
    client.cookies.set(ACCESS_COOKIE, session_token(signing_key, admin=True), domain="ui.test")
    response = client.get(address)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "Bad request" in response.text and f"{names}:" in response.text
    assert "int_parsing" not in response.text and "Ada Lovelace" in response.text


def test_a_plain_user_is_not_offered_the_admin_pages(
    client: TestClient, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    client.cookies.set(ACCESS_COOKIE, session_token(signing_key), domain="ui.test")
    html = client.get("/").text
    assert 'href="/teams"' in html and 'href="/admin"' not in html


def test_a_tampered_or_expired_session_is_dropped(
    client: TestClient, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    expired = session_token(signing_key, exp=int(time.time()) - 10, iat=int(time.time()) - 700)
    client.cookies.set(ACCESS_COOKIE, expired, domain="ui.test")
    response = client.get("/")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert f'{ACCESS_COOKIE}=""' in response.headers.get("set-cookie", "")

    other_key = ec.generate_private_key(ec.SECP256R1())
    client.cookies.set(ACCESS_COOKIE, session_token(other_key), domain="ui.test")
    assert client.get("/").status_code == 303


def test_operational_routes(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200  # keys loaded, client started
    assert "python_info" in client.get("/metrics").text


def test_flash_is_sealed_and_tamper_proof() -> None:
    kit = CookieKit(b"k" * 32, force_secure=False, refresh_max_age=60)
    sealed = kit.seal(Flash("success", "created", secret="aq-secret-value", secret_label="laptop"))
    assert "aq-secret-value" not in sealed
    assert kit.unseal(sealed) == Flash("success", "created", "aq-secret-value", "laptop")
    assert kit.unseal(sealed[:-4] + "AAAA") is None
    assert CookieKit(b"x" * 32, False, 60).unseal(sealed) is None


def test_csrf_tokens_are_bound_to_the_secret_and_the_key() -> None:
    kit = CookieKit(b"k" * 32, force_secure=False, refresh_max_age=60)
    token = kit.csrf_token("secret-a")
    assert kit.csrf_valid("secret-a", token)
    assert not kit.csrf_valid("secret-b", token)
    assert not kit.csrf_valid("secret-a", None)
    assert not CookieKit(b"x" * 32, False, 60).csrf_valid("secret-a", token)
