"""Entrypoints: HTTP routes, the sign-in request/reply handler, the command line."""
