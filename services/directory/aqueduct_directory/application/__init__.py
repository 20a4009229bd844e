"""Use cases of the directory, in plain values."""

from aqueduct_directory.application.app import DirectoryApp

__all__ = ["DirectoryApp"]
