"""JupyterHub users' API tokens accepted as API keys (the seed's single-user server example).

A bearer that is not an ``aq-`` token and not in the snapshot is exchanged once per cache window at the
auth service (``POST /auth/jupyterhub/exchange``), which validates it against the hub and resolves the
directory user; the request then authenticates as that user's own grant (snapshot key ``user.<id>``).
"""

from aqueduct_proxy.jupyterhub.settings import HubBridgeSettings
from aqueduct_proxy.jupyterhub.users import UserGrants
from aqueduct_proxy.jupyterhub.wiring import JupyterHubFeature

__all__ = ["HubBridgeSettings", "JupyterHubFeature", "UserGrants"]
