"""Use case of the models page: endpoints, their models, which ones the viewer may use, an SDK snippet."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from aqueduct_ui.adapters.api import ApiError, UserApi, items
from aqueduct_ui.application.budgets import BudgetLine, load_budget_state
from aqueduct_ui.domain.viewer import Viewer

__all__ = ["EndpointCard", "ModelRow", "ModelsPage", "load_models_page", "sdk_snippet"]


@dataclass(frozen=True)
class ModelRow:
    name: str
    upstream_model: str
    input_price: str | None
    output_price: str | None
    usable: bool
    excluded_by: str | None  # why it is not usable ("excluded by your team", ...), from the directory


@dataclass(frozen=True)
class EndpointCard:
    slug: str
    provider: str
    internal_url: str
    gateway_url: str  # the proxy URL that forwards to this endpoint
    models: list[ModelRow]


@dataclass(frozen=True)
class ModelsPage:
    base_url: str
    endpoints: list[EndpointCard]
    example_model: str | None
    blocked_by: str | None = None  # why no model can be used right now (budget used up, terms)
    team_budgets_used_up: tuple[BudgetLine, ...] = ()  # refuse the team's service-account tokens

    @property
    def snippet(self) -> str:
        return sdk_snippet(self.base_url, self.example_model or "MODEL_NAME")


def sdk_snippet(base_url: str, model: str) -> str:
    return (
        "from openai import OpenAI\n\n"
        "client = OpenAI(\n"
        f'    base_url="{base_url}",\n'
        '    api_key="YOUR_AQUEDUCT_TOKEN",  # create one on the Tokens page\n'
        ")\n\n"
        "response = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        '    messages=[{"role": "user", "content": "Hello, who are you?"}],\n'
        ")\n"
        "print(response.choices[0].message.content)\n"
    )


# Models a chat-completions snippet cannot call: the snippet prefers any other usable model.
_NOT_CHAT = re.compile(r"embed|whisper|tts|speech|transcri|dall-e|image|moderation|rerank", re.IGNORECASE)


def _not_chat(name: str) -> bool:
    return bool(_NOT_CHAT.search(name))


def _price(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


async def _me(api: UserApi) -> dict[str, Any]:
    try:
        me = await api.directory.get("/api/me")
    except ApiError:
        return {}
    return me if isinstance(me, dict) else {}


def _blocked_by(me: dict[str, Any], used_up: list[BudgetLine]) -> str | None:
    """Why the viewer's own tokens are refused whatever the model: their or their org's budget is used
    up, or the current terms of service are not accepted. (A used-up team budget refuses only that
    team's service-account tokens.)"""
    personal = [line for line in used_up if line.scope in ("user", "org")]
    if personal:
        return personal[0].reason
    if me.get("tos_accepted") is False:
        return "terms of service not accepted (accept them on the Tokens page)"
    return None


async def load_models_page(api: UserApi, viewer: Viewer, proxy_url: str) -> ModelsPage:
    endpoints_answer, models_answer, budgets, me = await asyncio.gather(
        api.directory.get("/api/endpoints"),
        api.directory.get("/api/models", all="true"),
        load_budget_state(api, viewer),
        _me(api),
    )
    blocked_by = _blocked_by(me, budgets.used_up)
    endpoints = items(endpoints_answer, "endpoints")
    models = items(models_answer, "models")
    proxy = proxy_url.rstrip("/")

    cards: list[EndpointCard] = []
    example: str | None = None
    for endpoint in sorted(endpoints, key=lambda e: e.get("slug", "")):
        if endpoint.get("deleted"):
            continue
        rows = []
        for model in sorted(
            (m for m in models if m.get("endpoint") == endpoint["slug"] and not m.get("deleted")),
            key=lambda m: m["name"],
        ):
            # The directory says why (org, team or account), by the same rule as the proxy's /v1/models.
            excluded_by = model.get("unavailable_reason") or blocked_by
            rows.append(
                ModelRow(
                    name=model["name"],
                    upstream_model=model.get("upstream_model") or model["name"],
                    input_price=_price(model.get("input_price_per_million")),
                    output_price=_price(model.get("output_price_per_million")),
                    usable=excluded_by is None,
                    excluded_by=excluded_by,
                )
            )
            if (
                excluded_by is None
                and (example is None or _not_chat(example))
                and not _not_chat(model["name"])
            ):
                example = model["name"]
            elif example is None and excluded_by is None:
                example = model["name"]
        cards.append(
            EndpointCard(
                slug=endpoint["slug"],
                provider=endpoint.get("provider", ""),
                internal_url=endpoint.get("url", ""),
                gateway_url=f"{proxy}/{endpoint['slug']}/v1",
                models=rows,
            )
        )
    return ModelsPage(
        base_url=f"{proxy}/v1",
        endpoints=cards,
        example_model=example,
        blocked_by=blocked_by,
        team_budgets_used_up=tuple(line for line in budgets.used_up if line.scope == "team"),
    )
