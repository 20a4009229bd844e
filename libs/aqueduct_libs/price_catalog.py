"""The price map that ships inside the installed LiteLLM package, read as a file.

LiteLLM itself is not imported (seconds of start-up, and it would try the network for a newer map).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

from aqueduct_libs.pricing import NANOS_PER_USD, Price

__all__ = ["litellm_price_file", "load_price_catalog"]

log = logging.getLogger(__name__)

_FILE = "model_prices_and_context_window_backup.json"


def litellm_price_file() -> Path | None:
    spec = importlib.util.find_spec("litellm")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / _FILE
        if candidate.exists():
            return candidate
    return None


def _nanos(usd_per_token: object) -> float | None:
    return float(usd_per_token) * NANOS_PER_USD if isinstance(usd_per_token, int | float) else None


def load_price_catalog(path: Path | None = None) -> dict[str, Price]:
    path = path or litellm_price_file()
    if path is None:
        log.warning("LiteLLM's price map was not found; models without directory prices cost 0")
        return {}
    catalog: dict[str, Price] = {}
    for name, entry in json.loads(path.read_text()).items():
        if name == "sample_spec" or not isinstance(entry, dict):
            continue
        input_cost = entry.get("input_cost_per_token")
        output_cost = entry.get("output_cost_per_token")
        if not isinstance(input_cost, int | float) and not isinstance(output_cost, int | float):
            continue
        cached = entry.get("cache_read_input_token_cost")
        max_output = entry.get("max_output_tokens")
        catalog[name] = Price(
            float(input_cost or 0) * NANOS_PER_USD,
            float(output_cost or 0) * NANOS_PER_USD,
            float(cached) * NANOS_PER_USD if isinstance(cached, int | float) else None,
            max_output if isinstance(max_output, int) and max_output > 0 else None,
            cache_write_nanos_per_token=_nanos(entry.get("cache_creation_input_token_cost")),
            cache_write_1h_nanos_per_token=_nanos(entry.get("cache_creation_input_token_cost_above_1hr")),
            reasoning_nanos_per_token=_nanos(entry.get("output_cost_per_reasoning_token")),
        )
    return catalog
