"""Counting input tokens before forwarding, with tiktoken's encodings shipped inside the litellm package.

tiktoken would download an encoding on first use; pointing ``TIKTOKEN_CACHE_DIR`` at the copies that
litellm ships (named by the SHA-1 of their download URL) means it never reaches the network.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

__all__ = ["TokenCounter", "shipped_encodings_dir"]


def shipped_encodings_dir() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return path if path.is_dir() else None


class TokenCounter:
    """Counts the tokens of the text a request sends (message contents, prompt or input)."""

    def __init__(self, encoding: str = "o200k_base") -> None:
        shipped = shipped_encodings_dir()
        if shipped is not None:
            os.environ["TIKTOKEN_CACHE_DIR"] = str(shipped)
        import tiktoken  # after the cache dir is set: tiktoken reads it when loading an encoding

        self._encoding = tiktoken.get_encoding(encoding)
        self._encode = self._encoding.encode_ordinary

    def count_text(self, text: str) -> int:
        return len(self._encode(text)) if text else 0

    def count(self, payload: dict[str, Any]) -> int:
        total = 0
        for key in ("messages", "prompt", "input"):
            value = payload.get(key)
            if value is not None:
                total += self._count_value(value)
        return total

    def _count_value(self, value: Any) -> int:
        # Iterative, so a hostile body nested thousands of lists deep cannot exhaust the stack.
        total, pending = 0, [value]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                total += self.count_text(item)
            elif isinstance(item, list):
                pending.extend(item)
            elif isinstance(item, dict):
                if "content" in item:
                    pending.append(item["content"])
                elif isinstance(item.get("text"), str):
                    total += self.count_text(item["text"])
            # token ids, images, audio: not text the tokenizer can count
        return total
