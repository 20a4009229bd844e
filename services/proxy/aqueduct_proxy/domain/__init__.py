"""domain layer of the proxy."""
