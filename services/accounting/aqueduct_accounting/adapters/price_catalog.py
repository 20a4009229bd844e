"""The LiteLLM price map, read as a file: the shared loader in ``aqueduct_libs.price_catalog``."""

from __future__ import annotations

from aqueduct_libs.price_catalog import litellm_price_file, load_price_catalog

__all__ = ["litellm_price_file", "load_price_catalog"]
