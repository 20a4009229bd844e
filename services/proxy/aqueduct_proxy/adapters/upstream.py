"""HTTP calls to model servers.

Calls with a bytes body or none (every JSON route) go through the lean HTTP/1.1 client in ``http1``: aiohttp's
client machinery alone costs about 100 µs per call (``bench/proxy.py --upstream-client aiohttp`` measures the
same proxy on aiohttp's client). Multipart uploads (``aiohttp.FormData``), the MCP gateway and every call that
must cross an egress proxy (``HTTP_PROXY``/``HTTPS_PROXY``, unless ``NO_PROXY`` exempts the host) use one
shared aiohttp session with a large connection pool. (httpx's default pool caps a pass-through at a few
hundred requests per second; aiohttp's does not.)
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections import deque
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from aqueduct_proxy.adapters.http1 import Http1Client, Http1Response

__all__ = ["Cooldown", "EgressProxies", "UpstreamClient", "UpstreamResponse"]

# What ``UpstreamClient.request`` answers: both offer status, reason, content_type, headers, read(),
# content.iter_any()/readany(), release() and close().
UpstreamResponse = aiohttp.ClientResponse | Http1Response


class EgressProxies:
    """Which upstream URLs go through an organisation's egress proxy: ``HTTP_PROXY``, ``HTTPS_PROXY`` and
    ``NO_PROXY`` (either case), read once, with the standard library's rules (``NO_PROXY`` hosts, domains,
    ``*``)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._proxies: dict[str, str] = {}
        for name, value in environ.items():
            lower = name.lower()
            if value and lower in ("http_proxy", "https_proxy", "no_proxy"):
                # The lower-case name wins, as curl and the standard library do.
                if name == lower or lower[:-6] not in self._proxies:
                    self._proxies[lower[:-6]] = value
        self._decided: dict[tuple[str, str], str | None] = {}

    def __bool__(self) -> bool:
        return bool(self._proxies.keys() - {"no"})

    def for_url(self, url: str) -> str | None:
        """The proxy URL for ``url``, or None to connect directly."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._decided:
            proxy = self._proxies.get(parts.scheme)
            # (in the standard library, missing from its type stubs)
            if proxy and urllib.request.proxy_bypass_environment(parts.netloc, self._proxies):  # type: ignore[attr-defined]
                proxy = None
            if len(self._decided) < 10_000:
                self._decided[key] = proxy
            return proxy
        return self._decided[key]


class UpstreamClient:
    def __init__(
        self,
        *,
        pool_size: int = 1000,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        egress: EgressProxies | None = None,
        client: Literal["builtin", "aiohttp"] = "builtin",
    ) -> None:
        self._pool_size = pool_size
        self._egress = egress if egress else None
        self._builtin = client == "builtin"
        self._ssl = ssl_context
        # ``ssl_context`` is for tests that trust their own CA; production verifies with the default one.
        self._http1 = Http1Client(
            pool_size=pool_size,
            read_timeout=timeout,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
        )
        # A time limit on each read, not on the whole answer: a long stream that keeps flowing is fine.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size,
            limit_per_host=0,
            ttl_dns_cache=300,
            ssl=self._ssl if self._ssl is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies must not leak between tokens
            # Ask for identity encoding: usage is read from the bytes, and compressing on loopback costs.
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        return self._session

    async def request(
        self, method: str, url: str, *, headers: dict[str, str], data: bytes | aiohttp.FormData | None
    ) -> UpstreamResponse:
        proxy = self._egress.for_url(url) if self._egress is not None else None
        if self._builtin and proxy is None and (data is None or isinstance(data, bytes)):
            return await self._http1.request(method, url, headers=headers, data=data)
        return await self.session.request(
            method, self._url(url), headers=headers, data=data, allow_redirects=False, proxy=proxy
        )

    def _url(self, url: str) -> URL:
        # Parsing a URL costs more than the rest of building the request; there are few distinct ones.
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = URL(url)
            if len(self._urls) < 10_000:
                self._urls[url] = parsed
        return parsed

    async def close(self) -> None:
        await self._http1.close()
        if self._session is not None:
            await self._session.close()


class Cooldown:
    """An endpoint that failed ``failures`` times within ``window`` seconds is skipped for ``seconds``."""

    def __init__(self, failures: int = 5, window: float = 30.0, seconds: float = 30.0) -> None:
        self._failures = failures
        self._window = window
        self._seconds = seconds
        self._recent: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def cooling(self, slug: str) -> bool:
        until = self._until.get(slug)
        return until is not None and time.monotonic() < until

    def failed(self, slug: str) -> None:
        now = time.monotonic()
        recent = self._recent.setdefault(slug, deque())
        recent.append(now)
        while recent and recent[0] < now - self._window:
            recent.popleft()
        if len(recent) >= self._failures:
            self._until[slug] = now + self._seconds
            recent.clear()

    def succeeded(self, slug: str) -> None:
        if slug in self._recent:
            self._recent[slug].clear()
