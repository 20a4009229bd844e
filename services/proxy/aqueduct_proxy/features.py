"""The proxy's optional features, wired from one list.

A feature adds its routes, its middleware and its start-up and clean-up steps to the proxy's application
(``wire``), and returns what it built (kept in ``Proxy.wired`` under its name, for the features after it).
The list's order is the middleware's order and the start-up order; it is stated here only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aqueduct_libs.settings import CommonSettings
from aqueduct_proxy.batches.settings import BatchSettings
from aqueduct_proxy.batches.wiring import BatchesFeature
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.files.wiring import FilesFeature
from aqueduct_proxy.jupyterhub.settings import HubBridgeSettings
from aqueduct_proxy.jupyterhub.wiring import JupyterHubFeature
from aqueduct_proxy.mcp.settings import McpSettings
from aqueduct_proxy.mcp.wiring import McpFeature

if TYPE_CHECKING:
    from aqueduct_proxy.bootstrap import Proxy

__all__ = ["Feature", "features"]


class Feature(Protocol):
    @property
    def name(self) -> str: ...

    def wire(self, proxy: Proxy) -> object: ...


def features(common: CommonSettings) -> list[Feature]:
    """Every optional feature, each with its own settings (``AQUEDUCT_PROXY_*`` prefixes), in order."""
    return [
        # JupyterHub users' tokens as API keys (off unless AQUEDUCT_PROXY_JUPYTERHUB_ENABLED). First: its
        # middleware turns a hub token into a grant before anything authenticates the request.
        JupyterHubFeature(HubBridgeSettings(), common.auth_url),
        # /v1/files and the inlining of file parts in chat (a middleware that authenticates).
        FilesFeature(FilesSettings()),
        # /v1/batches: reads and writes files, so after them.
        BatchesFeature(BatchSettings()),
        # /mcp/{name}.
        McpFeature(McpSettings()),
    ]
