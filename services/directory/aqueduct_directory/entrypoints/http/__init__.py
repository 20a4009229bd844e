"""HTTP entrypoint of the directory."""
