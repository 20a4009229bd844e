"""The proxy's OpenAPI document: static, built once. The request and answer bodies are OpenAI's own."""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI_DOCUMENT"]

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_ERRORS = {
    str(status): {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for status, text in (
        (400, "bad request (invalid JSON, wrong content type, missing model)"),
        (401, "missing, unknown or expired API token"),
        (403, "model not allowed for this token, or terms of service not accepted"),
        (404, "unknown model or endpoint"),
        (413, "request body too large"),
        (429, "rate limit or budget exceeded (Retry-After and x-ratelimit-* headers)"),
        (502, "the model server could not be reached"),
    )
}


def _model_call(summary: str, content_type: str = "application/json") -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {content_type: {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "the upstream's answer (OpenAI format)"}, **_ERRORS},
        }
    }


OPENAPI_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Aqueduct proxy",
        "version": "1",
        "description": "OpenAI-compatible data plane. Point the OpenAI SDK at http://HOST:PORT/v1.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": _ERROR},
    },
    "paths": {
        "/v1/models": {
            "get": {
                "summary": "Models this token may use",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "OpenAI model list"}, **_ERRORS},
            }
        },
        "/v1/chat/completions": _model_call("Chat completion (stream: server-sent events)"),
        "/v1/completions": _model_call("Text completion"),
        "/v1/embeddings": _model_call("Embeddings"),
        "/v1/responses": _model_call("Responses API"),
        "/v1/audio/speech": _model_call("Text to speech"),
        "/v1/audio/transcriptions": _model_call("Speech to text", "multipart/form-data"),
        "/v1/audio/translations": _model_call("Speech to English text", "multipart/form-data"),
        "/v1/images/generations": _model_call("Image generation"),
        "/{slug}/v1/{path}": {
            "parameters": [
                {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            **_model_call("Forward the rest of the path to the endpoint with this slug"),
        },
        "/healthz": {"get": {"summary": "The process answers", "responses": {"200": {"description": "ok"}}}},
        "/readyz": {
            "get": {
                "summary": "The auth snapshot has loaded",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics"}}}
        },
    },
}
