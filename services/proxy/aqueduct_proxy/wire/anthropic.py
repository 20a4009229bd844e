"""Anthropic's Messages API and OpenAI's chat completions, translated both ways (pure functions).

Used when a client speaks ``/v1/messages`` (Claude Code, the anthropic SDK) and the model lives on an
endpoint that speaks only chat completions (OpenAI, vLLM, Ollama, llama.cpp, or a LiteLLM provider).

LiteLLM ships an adapter for this (``litellm.llms.anthropic.pass_through.adapters``), but it works on
LiteLLM's pydantic response objects (a ``ModelResponse`` per streamed chunk) and needs ``import litellm``
(seconds, ~180 MB) in every proxy that serves ``/v1/messages``; the mapping below is the same one, on plain
dicts and bytes, so a translated request costs a few dict operations. Where the formats have no common
ground (server tools such as web search, thinking signatures, citations) the field is dropped, not faked.
"""

from __future__ import annotations

from typing import Any

import orjson

from aqueduct_proxy.domain.errors import ProxyError
from aqueduct_proxy.domain.usage import TokenUsage

__all__ = [
    "ChatToMessagesStream",
    "anthropic_model_list",
    "chat_error_to_anthropic",
    "chat_to_message",
    "error_body",
    "messages_problem",
    "messages_to_chat",
    "sse",
]

# Anthropic's error type for each status it documents; others fall back on api_error.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_PASSED_PARAMS = ("temperature", "top_p", "stream")


def error_body(status: int, message: str) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}``: what Anthropic's SDKs read an error from."""
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}


def proxy_error_body(error: ProxyError) -> dict[str, Any]:
    return error_body(error.status, error.message)


def chat_error_to_anthropic(status: int, body: bytes) -> bytes:
    """An upstream's OpenAI-format error answer, as Anthropic's error body (same status)."""
    message = "The model server answered with an error."
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
        elif isinstance(error, str):
            message = error
        elif isinstance(data.get("message"), str):
            message = data["message"]
    return orjson.dumps(error_body(status, message))


def messages_problem(payload: dict[str, Any]) -> tuple[str, str] | None:
    """The field the gateway cannot work with and why, or None (the upstream validates the rest)."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "messages", "messages: must be a non-empty array of message objects."
    for message in messages:
        if message.get("role") not in ("user", "assistant", "system"):
            return "messages", "messages: each message's role must be 'user', 'assistant' or 'system'."
        if not isinstance(message.get("content"), str | list):
            return "messages", "messages: each message's content must be a string or an array of blocks."
    system = payload.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system", "system: must be a string or an array of text blocks."
    tools = payload.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        return "tools", "tools: must be an array of tool objects."
    return None


def anthropic_model_list(listed: dict[str, Any]) -> dict[str, Any]:
    """The gateway's OpenAI-format model list in the shape of Anthropic's ``GET /v1/models``."""
    data = [
        {"type": "model", "id": m["id"], "display_name": m["id"], "created_at": "1970-01-01T00:00:00Z"}
        for m in listed["data"]
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


# -- requests: Anthropic -> chat completions ---------------------------------------------------------


def _text_of(content: Any) -> str:
    """The text of a string or of an array of blocks (text blocks joined by newlines)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _image_part(source: Any) -> dict[str, Any] | None:
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _user_parts(blocks: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A user turn's tool results (each its own "tool" message) and its other content parts."""
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            if (part := _image_part(block.get("source"))) is not None:
                parts.append(part)
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text":
                parts.append({"type": "text", "text": str(source.get("data", ""))})
            elif isinstance(source, dict) and source.get("type") == "base64":
                data = f"data:{source.get('media_type', 'application/pdf')};base64,{source.get('data', '')}"
                parts.append({"type": "file", "file": {"file_data": data}})
        elif kind == "tool_result":
            content = block.get("content")
            text = _text_of(content)
            if block.get("is_error") is True and text:
                text = "Error: " + text
            tool_messages.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
            # Images a tool returned cannot go in a chat "tool" message; they follow as user content.
            if isinstance(content, list):
                parts += [
                    p
                    for b in content
                    if isinstance(b, dict) and b.get("type") == "image"
                    for p in [_image_part(b.get("source"))]
                    if p is not None
                ]
    return tool_messages, parts


def _assistant_message(blocks: list[Any]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name", "")),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        # thinking and redacted_thinking blocks carry Anthropic signatures no other model can use
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    """Chat's ``tool_choice`` and ``parallel_tool_calls`` for Anthropic's ``tool_choice``."""
    if not isinstance(choice, dict):
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    kind = choice.get("type")
    if kind == "any":
        return "required", parallel
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    if kind == "none":
        return "none", None
    return "auto", parallel


def messages_to_chat(payload: dict[str, Any]) -> dict[str, Any]:
    """A chat completions request for an (already checked) Anthropic Messages request."""
    messages: list[dict[str, Any]] = []
    system = _text_of(payload.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in payload["messages"]:
        content = message["content"]
        if message["role"] == "system":  # a system message within the conversation (newer API versions)
            messages.append({"role": "system", "content": _text_of(content)})
        elif message["role"] == "assistant":
            messages.append(
                {"role": "assistant", "content": content}
                if isinstance(content, str)
                else _assistant_message(content)
            )
        elif isinstance(content, str):
            messages.append({"role": "user", "content": content})
        else:
            tool_messages, parts = _user_parts(content)
            messages += tool_messages
            if parts:
                only_text = all(p["type"] == "text" for p in parts)
                messages.append(
                    {"role": "user", "content": "\n".join(p["text"] for p in parts) if only_text else parts}
                )
    chat: dict[str, Any] = {"model": payload.get("model"), "messages": messages}
    if isinstance(payload.get("max_tokens"), int):
        chat["max_tokens"] = payload["max_tokens"]
    for name in _PASSED_PARAMS:
        if name in payload:
            chat[name] = payload[name]
    if isinstance(payload.get("stop_sequences"), list) and payload["stop_sequences"]:
        chat["stop"] = payload["stop_sequences"]
    tools = [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description") or "",
                "parameters": tool["input_schema"],
            },
        }
        for tool in payload.get("tools") or ()
        # Anthropic's server tools (web search, code execution, ...) have no schema: nothing to offer.
        if isinstance(tool.get("name"), str) and isinstance(tool.get("input_schema"), dict)
    ]
    if tools:
        chat["tools"] = tools
        choice, parallel = _tool_choice(payload.get("tool_choice"))
        if choice is not None:
            chat["tool_choice"] = choice
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"][:256]
    return chat


# -- answers: chat completions -> Anthropic ----------------------------------------------------------


def anthropic_usage(usage: TokenUsage | None) -> dict[str, int]:
    """Anthropic's usage block: its ``input_tokens`` exclude the cached ones."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    written = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
    return {
        "input_tokens": max(usage.input_tokens - usage.cached_tokens - written, 0),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": written,
    }


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {"arguments": arguments}  # a model that wrote invalid JSON: keep what it wrote
    return value if isinstance(value, dict) else {"value": value}


def _message_id(chat_id: Any) -> str:
    return "msg_" + (str(chat_id) if chat_id else "aqueduct")


def chat_to_message(body: dict[str, Any], model: str, usage: TokenUsage | None) -> dict[str, Any]:
    """Anthropic's message for a whole chat completion; ``model`` is the name the client asked for."""
    choices = body.get("choices")
    choice: dict[str, Any] = (
        choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    )
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": _tool_input(function.get("arguments")),
            }
        )
    return {
        "id": _message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ChatToMessagesStream:
    """Turns a chat completions stream, chunk by chunk, into Anthropic's event sequence.

    ``message_start``, then per content block ``content_block_start`` / ``_delta`` / ``_stop`` (text, and
    each tool call as a ``tool_use`` block with ``input_json_delta``), then ``message_delta`` (stop reason
    and the final usage) and ``message_stop``: those two are written by ``end`` only, after the usage
    chunk has arrived and been accounted.
    """

    __slots__ = ("_block", "_index", "_model", "_started", "_stop_reason", "_tools", "input_estimate")

    def __init__(self, model: str, input_estimate: int) -> None:
        self._model = model
        self.input_estimate = input_estimate
        self._started = False
        self._index = -1  # the open block's index, -1 when none is open
        self._block = ""  # "text" or "tool_use"
        self._tools: dict[int, int] = {}  # chat tool call index -> our block index
        self._stop_reason = "end_turn"

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # The real counts come with message_delta; this is the gateway's own count of the prompt.
            "usage": {"input_tokens": self.input_estimate, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _close_block(self) -> bytes:
        if self._index < 0 or not self._block:
            return b""
        self._block = ""
        return sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._index += 1
        self._block = block["type"]
        return out + sse(
            "content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        """The Anthropic events for one chat chunk (possibly none)."""
        out = b"" if self._started else self._start(chunk)
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return out
        choice = choices[0]
        delta: dict[str, Any] = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._block != "text":
                out += self._open({"type": "text", "text": ""})
            out += sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._index,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            position = call.get("index", 0)
            function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
            if position not in self._tools:
                out += self._open(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or f"toolu_{position}"),
                        "name": str(function.get("name") or ""),
                        "input": {},
                    }
                )
                self._tools[position] = self._index
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                out += sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._tools[position],
                        "delta": {"type": "input_json_delta", "partial_json": arguments},
                    },
                )
        finish = choice.get("finish_reason")
        if finish:
            self._stop_reason = _STOP_REASONS.get(str(finish), "end_turn")
            out += self._close_block()
        return out

    def end(self, usage: TokenUsage | None) -> bytes:
        """The closing events: any open block's stop, ``message_delta`` with the usage, ``message_stop``."""
        out = b"" if self._started else self._start({})
        out += self._close_block()
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
            "usage": anthropic_usage(usage),
        }
        return out + sse("message_delta", delta) + sse("message_stop", {"type": "message_stop"})
