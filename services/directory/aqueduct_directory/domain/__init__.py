"""The directory's domain: aggregates and the rules they enforce on themselves."""

from aqueduct_directory.domain.catalog import Endpoint, McpServer, Model, TermsOfService
from aqueduct_directory.domain.errors import (
    ConflictError,
    DirectoryError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from aqueduct_directory.domain.org import Org, Team, User
from aqueduct_directory.domain.token import ServiceAccount, Token
from aqueduct_directory.domain.topics import keep_old_topics

keep_old_topics()

__all__ = [
    "ConflictError",
    "DirectoryError",
    "Endpoint",
    "InvalidInputError",
    "McpServer",
    "Model",
    "NotFoundError",
    "Org",
    "PermissionDeniedError",
    "ServiceAccount",
    "Team",
    "TermsOfService",
    "Token",
    "User",
]
