"""The proxy's OpenAPI document: static, built once. The request and answer bodies are OpenAI's own."""

from __future__ import annotations

from typing import Any

from aqueduct_proxy.batches.domain import ENDPOINTS as BATCH_ENDPOINTS
from aqueduct_proxy.files.domain import INPUT_PURPOSES

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
        (404, "unknown model, endpoint, file, batch or MCP server"),
        (413, "request body too large"),
        (429, "rate limit or budget exceeded (Retry-After and x-ratelimit-* headers)"),
        (502, "the model server could not be reached"),
    )
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _ERRORS[str(s)] for s in statuses}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _model_call(summary: str, content_type: str = "application/json") -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {content_type: {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "the upstream's answer (OpenAI format)"}, **_ERRORS},
        }
    }


_ANTHROPIC_ERROR = {
    "type": "object",
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}


def _anthropic_call(summary: str) -> dict[str, Any]:
    """Anthropic's Messages API: its key as ``x-api-key`` or a bearer token; errors in its own format."""
    errors = {
        status: {
            "description": answer["description"],
            "content": {"application/json": {"schema": _ref("AnthropicError")}},
        }
        for status, answer in _ERRORS.items()
    }
    return {
        "post": {
            "summary": summary,
            "description": (
                "Anthropic's Messages API. Passed unchanged to Anthropic endpoints; translated to chat "
                "completions (and the answer, whole or streamed, back) for every other endpoint."
            ),
            "security": [{"bearer": []}, {"anthropicKey": []}],
            "parameters": [
                {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                for h in ("anthropic-version", "anthropic-beta")
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {"200": {"description": "Anthropic's message (stream: its events)"}, **errors},
        }
    }


_NULLABLE_INT = {"type": ["integer", "null"]}
_FILE = {
    "type": "object",
    "required": ["id", "object", "bytes", "created_at", "filename", "purpose"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "file"},
        "bytes": {"type": "integer"},
        "created_at": {"type": "integer"},
        "filename": {"type": "string"},
        "purpose": {"type": "string", "enum": sorted(INPUT_PURPOSES | {"batch_output"})},
        "status": {"type": "string"},
        "status_details": {"type": ["string", "null"]},
        "expires_at": _NULLABLE_INT,
    },
}
_BATCH_STATUSES = [
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]  # fmt: skip
_BATCH = {
    "type": "object",
    "required": ["id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "batch"},
        "endpoint": {"type": "string", "enum": sorted(BATCH_ENDPOINTS)},
        "errors": {"type": "null"},
        "input_file_id": {"type": "string"},
        "completion_window": {"const": "24h"},
        "status": {"type": "string", "enum": _BATCH_STATUSES},
        "output_file_id": {"type": ["string", "null"]},
        "error_file_id": {"type": ["string", "null"]},
        **{
            f"{moment}_at": _NULLABLE_INT
            for moment in (
                "in_progress",
                "expires",
                "finalizing",
                "completed",
                "failed",
                "expired",
                "cancelling",
                "cancelled",
            )
        },
        "created_at": {"type": "integer"},
        "request_counts": {
            "type": "object",
            "properties": {n: {"type": "integer"} for n in ("total", "completed", "failed")},
        },
        "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
    },
}
_JSON_RPC = {
    "type": "object",
    "description": "A JSON-RPC 2.0 request, notification or response, as MCP's streamable HTTP carries it",
    "required": ["jsonrpc"],
    "properties": {
        "jsonrpc": {"const": "2.0"},
        "id": {"type": ["string", "integer"]},
        "method": {"type": "string"},
        "params": {"type": "object"},
        "result": {"type": "object"},
        "error": {
            "type": "object",
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
        },
    },
}


def _list_of(schema: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref(schema)},
            "has_more": {"type": "boolean"},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
        },
    }


_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_LIMIT_AFTER = [
    _query("limit", {"type": "integer", "minimum": 1}, "page size"),
    _query("after", {"type": "string"}, "the id the page starts after"),
]
_FILE_ID = [_path_param("file_id")]
_BATCH_ID = [_path_param("batch_id")]
_MCP_SESSION = {
    "name": "Mcp-Session-Id",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "the session the MCP server gave at initialize, passed through both ways",
}

_FILES_PATHS: dict[str, Any] = {
    "/v1/files": {
        "post": {
            "summary": "Upload a file (purpose 'batch' for batch input; any purpose for file content in chat)",
            "security": _BEARER,
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file", "purpose"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "purpose": {"type": "string", "enum": sorted(INPUT_PURPOSES)},
                            },
                        }
                    }
                },
            },
            "responses": {"200": _json(_ref("File"), "the stored file"), **_errors(400, 401, 413)},
        },
        "get": {
            "summary": "Files of this token's owner (a service account's own, else its user's)",
            "security": _BEARER,
            "parameters": [
                _query("purpose", {"type": "string"}, "only files of this purpose"),
                *_LIMIT_AFTER,
                _query("order", {"type": "string", "enum": ["asc", "desc"]}, "by creation time"),
            ],
            "responses": {"200": _json(_ref("FileList"), "a page of files"), **_errors(400, 401)},
        },
    },
    "/v1/files/{file_id}": {
        "parameters": _FILE_ID,
        "get": {
            "summary": "A file's metadata",
            "security": _BEARER,
            "responses": {"200": _json(_ref("File"), "the file"), **_errors(401, 404)},
        },
        "delete": {
            "summary": "Delete a file",
            "security": _BEARER,
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "object": {"const": "file"},
                            "deleted": {"const": True},
                        },
                    },
                    "deleted",
                ),
                **_errors(401, 404),
            },
        },
    },
    "/v1/files/{file_id}/content": {
        "parameters": _FILE_ID,
        "get": {
            "summary": "A file's bytes (a batch's output and error files are JSONL)",
            "security": _BEARER,
            "responses": {
                "200": {
                    "description": "the content",
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                **_errors(401, 404),
            },
        },
    },
}

_BATCHES_PATHS: dict[str, Any] = {
    "/v1/batches": {
        "post": {
            "summary": "Run the requests of an uploaded JSONL file (one per line) within 24 hours",
            "security": _BEARER,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["input_file_id", "endpoint", "completion_window"],
                            "properties": {
                                "input_file_id": {"type": "string"},
                                "endpoint": {"type": "string", "enum": sorted(BATCH_ENDPOINTS)},
                                "completion_window": {"const": "24h"},
                                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_ref("Batch"), "the batch, in progress"),
                **_errors(400, 401, 404),
            },
        },
        "get": {
            "summary": "Batches of this token's owner, newest first",
            "security": _BEARER,
            "parameters": _LIMIT_AFTER,
            "responses": {"200": _json(_ref("BatchList"), "a page of batches"), **_errors(400, 401)},
        },
    },
    "/v1/batches/{batch_id}": {
        "parameters": _BATCH_ID,
        "get": {
            "summary": "A batch, with its progress and, once done, its output and error files",
            "security": _BEARER,
            "responses": {"200": _json(_ref("Batch"), "the batch"), **_errors(401, 404)},
        },
    },
    "/v1/batches/{batch_id}/cancel": {
        "parameters": _BATCH_ID,
        "post": {
            "summary": "Cancel a batch: queued lines are dropped, lines in flight finish",
            "security": _BEARER,
            "responses": {"200": _json(_ref("Batch"), "the batch, cancelling"), **_errors(401, 404)},
        },
    },
}

_MCP_ERRORS = {
    **_errors(401, 404, 502),
    "403": {
        "description": "server not allowed for this token's team, or a Host/Origin refused "
        "(DNS-rebinding protection)",
        "content": {"application/json": {"schema": _ref("Error")}},
    },
}
_MCP_PATHS: dict[str, Any] = {
    "/mcp/{name}": {
        "parameters": [_path_param("name"), _MCP_SESSION],
        "post": {
            "summary": "MCP streamable HTTP: a JSON-RPC message (or batch) to the registered MCP server",
            "security": _BEARER,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _ref("JsonRpcMessage"),
                                {"type": "array", "items": _ref("JsonRpcMessage")},
                            ]
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "the server's answer: JSON, or a server-sent event stream of messages",
                    "content": {
                        "application/json": {"schema": _ref("JsonRpcMessage")},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                "202": {"description": "a notification or response accepted"},
                **_MCP_ERRORS,
                "429": _json(
                    {
                        "oneOf": [
                            _ref("JsonRpcMessage"),
                            {"type": "array", "items": _ref("JsonRpcMessage")},
                        ]
                    },
                    "tools/call over the token's requests-per-minute limit: a JSON-RPC error per "
                    "request (Retry-After and x-ratelimit-* headers)",
                ),
            },
        },
        "get": {
            "summary": "MCP streamable HTTP: the server's own event stream for the session",
            "security": _BEARER,
            "responses": {
                "200": {
                    "description": "server-sent events",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "405": {"description": "the server offers no such stream"},
                **_MCP_ERRORS,
            },
        },
        "delete": {
            "summary": "MCP streamable HTTP: end the session",
            "security": _BEARER,
            "responses": {"200": {"description": "session ended"}, **_MCP_ERRORS},
        },
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
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "anthropicKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
        },
        "schemas": {
            "Error": _ERROR,
            "AnthropicError": _ANTHROPIC_ERROR,
            "File": _FILE,
            "FileList": _list_of("File"),
            "Batch": _BATCH,
            "BatchList": _list_of("Batch"),
            "JsonRpcMessage": _JSON_RPC,
        },
    },
    "paths": {
        "/v1/models": {
            "get": {
                "summary": "Models this token may use",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "OpenAI model list"}, **_ERRORS},
            }
        },
        "/v1/models/{model}": {
            "parameters": [_path_param("model")],
            "get": {
                "summary": "One model this token may use, by its name or an alias",
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "OpenAI model object"}, **_ERRORS},
            },
        },
        "/v1/chat/completions": _model_call("Chat completion (stream: server-sent events)"),
        "/v1/completions": _model_call("Text completion"),
        "/v1/embeddings": _model_call("Embeddings"),
        "/v1/responses": _model_call(
            "Responses API (translated to chat completions for endpoints without it: responses: false)"
        ),
        "/{slug}/v1/responses": {
            "parameters": [_path_param("slug")],
            **_model_call("Responses API on the endpoint with this slug"),
        },
        "/v1/audio/speech": _model_call("Text to speech"),
        "/v1/audio/transcriptions": _model_call("Speech to text", "multipart/form-data"),
        "/v1/audio/translations": _model_call("Speech to English text", "multipart/form-data"),
        "/v1/images/generations": _model_call("Image generation"),
        "/v1/messages": _anthropic_call("Anthropic Messages (stream: Anthropic's server-sent events)"),
        "/v1/messages/count_tokens": _anthropic_call("Count a Messages request's input tokens"),
        "/{slug}/v1/messages": {
            "parameters": [_path_param("slug")],
            **_anthropic_call("Anthropic Messages on the endpoint with this slug"),
        },
        "/{slug}/v1/messages/count_tokens": {
            "parameters": [_path_param("slug")],
            **_anthropic_call("Count tokens on the endpoint with this slug"),
        },
        **_FILES_PATHS,
        **_BATCHES_PATHS,
        **_MCP_PATHS,
        "/{slug}/v1/{tail}": {
            "parameters": [_path_param("slug"), _path_param("tail")],
            **_model_call("Forward the rest of the path (tail) to the endpoint with this slug"),
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}
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
