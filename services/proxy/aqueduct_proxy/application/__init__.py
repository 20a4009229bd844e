"""application layer of the proxy."""
