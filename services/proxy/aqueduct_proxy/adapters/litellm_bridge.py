"""Chat completions for providers that do not speak OpenAI's API (Anthropic, Azure, ...) via LiteLLM.

``import litellm`` costs seconds and ~180 MB, so it happens on first use (in a thread), only in
deployments that configure such an endpoint. The answer is shaped like the aiohttp response the relay
already handles (status, content type, ``read()``, ``content.iter_any()``), in OpenAI's format.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

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
        async for chunk in self._stream:
            yield b"data: " + orjson.dumps(chunk.model_dump(exclude_none=True)) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def release(self) -> None:
        return None

    def close(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            task = asyncio.ensure_future(closer())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


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
            result = await litellm.acompletion(
                model=model, api_base=base_url, api_key=api_key or "none", timeout=deadline, **params
            )
        except Exception as exc:  # litellm maps provider errors to exceptions carrying a status code
            status = getattr(exc, "status_code", None)
            raise ProviderError(status if isinstance(status, int) else 502, str(exc)) from exc
        if stream:
            return LiteLLMAnswer(200, "text/event-stream", stream=result)
        return LiteLLMAnswer(200, "application/json", body=orjson.dumps(result.model_dump(exclude_none=True)))
