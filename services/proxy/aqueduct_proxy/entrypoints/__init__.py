"""entrypoints layer of the proxy."""
