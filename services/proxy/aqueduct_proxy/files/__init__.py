"""The files API (``/v1/files``) over the NATS object store, and file content for chat requests."""

from aqueduct_proxy.files.domain import StoredFile
from aqueduct_proxy.files.extract import UnreadableFileError, extract_text
from aqueduct_proxy.files.http import setup_files
from aqueduct_proxy.files.inline import inline_file_parts, setup_file_inlining
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.files.store import FileStore

__all__ = [
    "FileStore",
    "FilesSettings",
    "StoredFile",
    "UnreadableFileError",
    "extract_text",
    "inline_file_parts",
    "setup_file_inlining",
    "setup_files",
]
