"""adapters layer of the proxy."""
