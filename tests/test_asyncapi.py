"""The checked-in AsyncAPI document (docs/asyncapi.yaml) is what the services' FastStream brokers say."""

from __future__ import annotations

import warnings

import yaml

from tools.asyncapi import DOCUMENT, render


def test_the_asyncapi_document_matches_the_code() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two channels of one name: one would hide the other
        generated = render()
    assert DOCUMENT.read_text() == generated, (
        "docs/asyncapi.yaml is out of date with the services' FastStream handlers and publishers: "
        "run `make asyncapi` (.venv/bin/python -m tools.asyncapi) and commit the result"
    )


def test_every_service_on_the_bus_is_in_the_document() -> None:
    document = DOCUMENT.read_text()
    for handler in ("directory.rpc.v1.sign_in:SubscribeMessage", "batch lines:SubscribeMessage"):
        assert handler in document
    for server in ("aqueduct-directory", "aqueduct-proxy", "aqueduct-batch-worker", "aqueduct-auth"):
        assert f"'{server}:" in document


def test_the_usage_payloads_are_what_the_publishers_send() -> None:
    """A lone usage event travels as a bare object (the proxy's alone, the batch worker's always), a group
    as a JSON array: a consumer generated from the document must accept both, as accounting does."""

    schemas = yaml.safe_load(DOCUMENT.read_text())["components"]
    bare = {"$ref": "#/components/schemas/UsageRecorded"}
    proxy = schemas["schemas"]["usage.v1.recorded (proxy):Message:Payload"]
    assert {"items": bare, "type": "array"} in proxy["anyOf"] and bare in proxy["anyOf"]
    assert schemas["messages"]["usage.v1.recorded (batch worker):Message"]["payload"] == bare
