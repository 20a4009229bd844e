"""The files API (``/v1/files``) over the NATS object store, and file content for chat requests."""

from aqueduct_proxy.files.domain import StoredFile
from aqueduct_proxy.files.http import setup_files
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.files.store import FileStore

__all__ = ["FileStore", "FilesSettings", "StoredFile", "setup_files"]
