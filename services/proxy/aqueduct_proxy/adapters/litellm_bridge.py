"""Chat completions for providers that do not speak OpenAI's API (Anthropic, Azure, ...) via LiteLLM.

``import litellm`` costs seconds and ~180 MB, so it happens on first use (in a thread), only in
deployments that configure such an endpoint. The answer is shaped like the aiohttp response the relay
already handles (status, content type, ``read()``, ``content.iter_any()``), in OpenAI's format.

Failures are told apart the way the OpenAI path tells them: a provider that cannot be reached or is too
slow raises the same exceptions as aiohttp (so the gateway retries, cools the endpoint down and answers
502); a provider's error answer becomes ``ProviderError`` with its status, except that the provider
refusing the gateway's own credentials (401/403) is a 502: the client's Aqueduct key is not at fault.
A stream the provider breaks off (an ``error`` event mid-stream) ends as a broken upstream stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import aiohttp
import orjson

__all__ = ["LiteLLMAnswer", "LiteLLMBridge", "ProviderError"]


class ProviderError(Exception):
    """LiteLLM could not reach the provider or the provider answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Chunks:
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    def iter_any(self) -> AsyncIterator[bytes]:
        return self._chunks


class LiteLLMAnswer:
    """The subset of ``aiohttp.ClientResponse`` the relay uses."""

    def __init__(self, status: int, content_type: str, body: bytes = b"", stream: Any = None) -> None:
        self.status = status
        self.content_type = content_type
        self.headers = {"Content-Type": content_type}
        self._body = body
        self._stream = stream
        self.content = _Chunks(self._events())

    async def read(self) -> bytes:
        return self._body

    async def _events(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield b"data: " + orjson.dumps(_openai_chunk(chunk.model_dump(exclude_none=True))) + b"\n\n"
        except Exception as exc:  # what the relay handles as an upstream that broke off mid-stream
            raise aiohttp.ClientPayloadError(f"the provider broke off the stream: {exc}") from exc
        yield b"data: [DONE]\n\n"

    def release(self) -> None:
        return None

    def close(self) -> None:
        task = asyncio.ensure_future(self._close())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _close(self) -> None:
        # LiteLLM's wrapper closes its provider iterator only if that has ``aclose``; Anthropic's has not,
        # so the HTTP response underneath would stay open (and the provider keep generating, and billing)
        # until garbage collection. Close the line iterator over the HTTP response first.
        provider = getattr(self._stream, "completion_stream", None)
        for attribute in ("async_response_iterator", "streaming_response"):
            inner = getattr(provider, attribute, None)
            closer = getattr(inner, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()


def _openai_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM's final usage chunk keeps an empty choice; OpenAI's has none (clients and the usage tally
    rely on ``choices == []`` to tell the usage-only chunk apart)."""
    choices = chunk.get("choices")
    if chunk.get("usage") and choices and all(_empty_choice(c) for c in choices):
        chunk["choices"] = []
    for choice in chunk.get("choices") or ():
        (choice.get("delta") or {}).pop("provider_specific_fields", None)
    return chunk


def _empty_choice(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    return not choice.get("finish_reason") and not any(v for k, v in delta.items() if k != "role")


def _openai_body(body: dict[str, Any]) -> dict[str, Any]:
    for choice in body.get("choices") or ():
        (choice.get("message") or {}).pop("provider_specific_fields", None)
    return body


def _transport_failure(exc: BaseException) -> Exception | None:
    """A timeout or connection failure under LiteLLM's wrapping (it reports a refused connection as a
    500 ``InternalServerError`` whose causes hold the httpx/aiohttp error), or None."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        names = {klass.__name__ for klass in type(cause).__mro__}
        # Checked before connection errors: LiteLLM's and httpx's timeouts subclass them.
        if isinstance(cause, TimeoutError) or names & {"Timeout", "APITimeoutError", "TimeoutException"}:
            return TimeoutError(str(exc))
        if isinstance(cause, aiohttp.ClientConnectionError | ConnectionError) or names & {
            "APIConnectionError",
            "TransportError",
        }:
            return aiohttp.ClientConnectionError(str(exc))
        cause = cause.__cause__ or cause.__context__
    return None


def _failure(exc: Exception) -> Exception:
    """The exception the gateway should see for what LiteLLM raised."""
    if (transport := _transport_failure(exc)) is not None:
        return transport
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) and 400 <= status <= 599 else 502
    detail = getattr(exc, "message", None) or str(exc)
    if status in (401, 403):
        return ProviderError(
            502,
            f"The model provider refused the gateway's credentials ({status}); an administrator must "
            f"check the endpoint's API key. Provider said: {detail}",
        )
    return ProviderError(status, str(detail))


# The litellm model prefix of each provider; "litellm" endpoints name the full litellm model themselves.
_PREFIX = {"anthropic": "anthropic/", "azure": "azure/", "litellm": ""}


class LiteLLMBridge:
    def __init__(self) -> None:
        self._module: ModuleType | None = None
        self._lock = asyncio.Lock()

    async def _litellm(self) -> ModuleType:
        if self._module is None:
            async with self._lock:
                if self._module is None:
                    # Never let it fetch its price map from the internet at run time.
                    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                    module = await asyncio.to_thread(importlib.import_module, "litellm")
                    setattr(module, "telemetry", False)  # noqa: B010 - untyped module attribute
                    # Errors are answered to the client; LiteLLM's "Give Feedback" banners on stdout are noise.
                    setattr(module, "suppress_debug_info", True)  # noqa: B010
                    self._module = module
        return self._module

    async def chat(
        self, provider: str, base_url: str, api_key: str | None, payload: dict[str, Any], deadline: float
    ) -> LiteLLMAnswer:
        litellm = await self._litellm()
        params = {k: v for k, v in payload.items() if k not in ("model", "stream_options")}
        model = _PREFIX.get(provider, f"{provider}/") + str(payload["model"])
        if provider == "anthropic" and base_url.endswith("/v1"):
            base_url = base_url[: -len("/v1")]  # litellm appends /v1/messages itself
        stream = payload.get("stream") is True
        if stream:
            params["stream_options"] = {"include_usage": True}
        try:
            # num_retries=0: retries, cooldown and fallbacks are the gateway's, as for OpenAI endpoints.
            result = await litellm.acompletion(
                model=model,
                api_base=base_url,
                api_key=api_key or "none",
                timeout=deadline,
                num_retries=0,
                **params,
            )
        except Exception as exc:  # litellm maps provider errors to exceptions carrying a status code
            raise _failure(exc) from exc
        if stream:
            return LiteLLMAnswer(200, "text/event-stream", stream=result)
        body = _openai_body(result.model_dump(exclude_none=True))
        return LiteLLMAnswer(200, "application/json", body=orjson.dumps(body))
