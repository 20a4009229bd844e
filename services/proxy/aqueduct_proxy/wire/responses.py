"""OpenAI's Responses API translated to chat completions and back (pure functions), for endpoints that
speak only chat completions (``responses: false``: vLLM, Ollama, llama.cpp servers; and every endpoint
served through LiteLLM). Codex and other Responses clients then work against them.

The Responses API keeps state on the server (``previous_response_id``, stored responses); a chat-only
upstream has none, so a request that relies on it is refused with a clear 400 rather than answered
without its context. Tools other than functions (web search, file search, ...) are dropped: the upstream
cannot run them. Reasoning items are dropped as well: no other model can read them.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from aqueduct_proxy.domain.usage import TokenUsage

__all__ = ["ChatToResponsesStream", "chat_to_response", "responses_problem", "responses_to_chat"]

_PASSED_PARAMS = ("temperature", "top_p", "stream", "parallel_tool_calls", "user")
_ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def responses_problem(payload: dict[str, Any]) -> tuple[str, str] | None:
    """The field a chat-only upstream cannot serve and why, or None."""
    if payload.get("previous_response_id"):
        return (
            "previous_response_id",
            "previous_response_id is not supported for this model: its server keeps no responses; "
            "send the whole conversation in 'input'.",
        )
    value = payload.get("input")
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        return "input", "'input' must be a string or a non-empty array of items."
    if isinstance(value, list) and not all(isinstance(item, dict) for item in value):
        return "input", "'input' must be an array of item objects."
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _user_content(content: Any) -> Any:
    """A chat message's content for a Responses message's content (text parts, images)."""
    if isinstance(content, str) or not isinstance(content, list):
        return _content_text(content)
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "input_image":
            url = part.get("image_url")
            if isinstance(url, str):
                parts.append({"type": "image_url", "image_url": {"url": url}})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if isinstance(payload.get("instructions"), str) and payload["instructions"]:
        messages.append({"role": "system", "content": payload["instructions"]})
    items = payload["input"]
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(str(item.get("role")), "user")
            content = item.get("content")
            if role == "user":
                messages.append({"role": "user", "content": _user_content(content)})
            else:
                messages.append({"role": role, "content": _content_text(content)})
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or item.get("id") or ""),
                "type": "function",
                "function": {"name": str(item.get("name", "")), "arguments": str(item.get("arguments", ""))},
            }
            last = messages[-1] if messages else None
            # Calls of one turn (and the text before them) are one assistant message in chat completions.
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if not last.get("content"):
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id", "")),
                    "content": output if isinstance(output, str) else _content_text(output),
                }
            )
        # reasoning, web_search_call, ... items: nothing a chat-only model can use
    return _one_leading_system(messages)


def _one_leading_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Instructions and developer messages that open the conversation, as one system message: the chat
    templates of many local models accept a single system message, at the start only."""
    leading = 0
    while leading < len(messages) and messages[leading]["role"] == "system":
        leading += 1
    if leading < 2:
        return messages
    text = "\n\n".join(str(m["content"]) for m in messages[:leading] if m["content"])
    return [{"role": "system", "content": text}, *messages[leading:]]


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "required", "none"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    return None


def responses_to_chat(payload: dict[str, Any]) -> dict[str, Any]:
    """A chat completions request for an (already checked) Responses request."""
    chat: dict[str, Any] = {"model": payload.get("model"), "messages": _messages(payload)}
    if isinstance(payload.get("max_output_tokens"), int):
        chat["max_tokens"] = payload["max_output_tokens"]
    for name in _PASSED_PARAMS:
        if name in payload:
            chat[name] = payload[name]
    tools = [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description") or "",
                "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
            },
        }
        for tool in payload.get("tools") or ()
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str)
    ]
    if tools:
        chat["tools"] = tools
        choice = _tool_choice(payload.get("tool_choice"))
        if choice is not None:
            chat["tool_choice"] = choice
    else:
        chat.pop("parallel_tool_calls", None)
    text = payload.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    return chat


# -- answers -----------------------------------------------------------------------------------------


def responses_usage(usage: TokenUsage | None) -> dict[str, Any]:
    usage = usage or TokenUsage()
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _response(
    response_id: str, model: str, payload: dict[str, Any], status: str, output: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "store": False,
        "temperature": payload.get("temperature"),
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools") or [],
        "top_p": payload.get("top_p"),
        "usage": None,
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
        if status == "completed"
        else [],
    }


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def chat_to_response(
    body: dict[str, Any], model: str, payload: dict[str, Any], usage: TokenUsage | None
) -> dict[str, Any]:
    """The Responses API's answer for a whole chat completion."""
    choices = body.get("choices")
    choice: dict[str, Any] = (
        choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    )
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    output: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        output.append(_message_item(_new_id("msg_"), message["content"]))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(
            _call_item(
                _new_id("fc_"),
                str(call.get("id") or _new_id("call_")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
            )
        )
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    response = _response(_new_id("resp_"), model, payload, status, output)
    response["usage"] = responses_usage(usage)
    return response


def _sse(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ChatToResponsesStream:
    """Turns a chat completions stream into the Responses API's events: ``response.created``, per output
    item ``output_item.added`` / deltas / ``output_item.done``, and ``response.completed`` (with the usage,
    written by ``end`` once it has been accounted)."""

    def __init__(self, model: str, payload: dict[str, Any]) -> None:
        self._model = model
        self._payload = payload
        self._id = _new_id("resp_")
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any]] = []  # finished items
        self._text_item: dict[str, Any] | None = None  # the open message item, with its text so far
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool call index -> open function call item
        self._finish: str | None = None

    def _event(self, data: dict[str, Any]) -> bytes:
        data["sequence_number"] = self._sequence
        self._sequence += 1
        return _sse(data)

    def _start(self) -> bytes:
        self._started = True
        response = _response(self._id, self._model, self._payload, "in_progress", [])
        return self._event({"type": "response.created", "response": response}) + self._event(
            {"type": "response.in_progress", "response": response}
        )

    def _close_text(self) -> bytes:
        item = self._text_item
        if item is None:
            return b""
        self._text_item = None
        index, text = item["index"], item["text"]
        done = _message_item(item["id"], text)
        self._output.append(done)
        part = {"type": "output_text", "text": text, "annotations": []}
        common = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return (
            self._event({"type": "response.output_text.done", **common, "text": text})
            + self._event({"type": "response.content_part.done", **common, "part": part})
            + self._event({"type": "response.output_item.done", "output_index": index, "item": done})
        )

    def _close_calls(self) -> bytes:
        out = b""
        for call in sorted(self._calls.values(), key=lambda c: c["index"]):
            done = _call_item(call["id"], call["call_id"], call["name"], call["arguments"])
            self._output.append(done)
            out += self._event(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": call["id"],
                    "output_index": call["index"],
                    "arguments": call["arguments"],
                }
            )
            out += self._event(
                {"type": "response.output_item.done", "output_index": call["index"], "item": done}
            )
        self._calls = {}
        return out

    def _next_index(self) -> int:
        return len(self._output) + (1 if self._text_item else 0) + len(self._calls)

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start()
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return out
        choice = choices[0]
        delta: dict[str, Any] = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._text_item is None:
                item_id, index = _new_id("msg_"), self._next_index()
                self._text_item = {"id": item_id, "index": index, "text": ""}
                out += self._event(
                    {
                        "type": "response.output_item.added",
                        "output_index": index,
                        "item": _message_item(item_id, "", "in_progress"),
                    }
                )
                out += self._event(
                    {
                        "type": "response.content_part.added",
                        "item_id": item_id,
                        "output_index": index,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    }
                )
            self._text_item["text"] += text
            out += self._event(
                {
                    "type": "response.output_text.delta",
                    "item_id": self._text_item["id"],
                    "output_index": self._text_item["index"],
                    "content_index": 0,
                    "delta": text,
                }
            )
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            position = call.get("index", 0)
            function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
            item = self._calls.get(position)
            if item is None:
                out += self._close_text()
                item = {
                    "id": _new_id("fc_"),
                    "index": self._next_index(),
                    "call_id": str(call.get("id") or _new_id("call_")),
                    "name": str(function.get("name") or ""),
                    "arguments": "",
                }
                self._calls[position] = item
                added = _call_item(item["id"], item["call_id"], item["name"], "", "in_progress")
                out += self._event(
                    {"type": "response.output_item.added", "output_index": item["index"], "item": added}
                )
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                item["arguments"] += arguments
                out += self._event(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item["id"],
                        "output_index": item["index"],
                        "delta": arguments,
                    }
                )
        if choice.get("finish_reason"):
            self._finish = str(choice["finish_reason"])
            out += self._close_text() + self._close_calls()
        return out

    def end(self, usage: TokenUsage | None) -> bytes:
        out = b"" if self._started else self._start()
        out += self._close_text() + self._close_calls()
        status = "incomplete" if self._finish == "length" else "completed"
        response = _response(self._id, self._model, self._payload, status, self._output)
        response["usage"] = responses_usage(usage)
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self._event({"type": kind, "response": response})

    @staticmethod
    def broken(message: str) -> bytes:
        return _sse({"type": "error", "code": "upstream_stream_broken", "message": message, "param": None})
