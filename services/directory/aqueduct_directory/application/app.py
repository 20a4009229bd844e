"""The directory application: every use case, over one event store and one read model."""

from __future__ import annotations

from aqueduct_directory.application.catalog import CatalogUseCases
from aqueduct_directory.application.organisation import OrganisationUseCases
from aqueduct_directory.application.tokens import TokenUseCases

__all__ = ["DirectoryApp"]


class DirectoryApp(OrganisationUseCases, TokenUseCases, CatalogUseCases):
    name = "directory"
