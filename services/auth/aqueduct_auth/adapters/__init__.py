"""Adapters: key files, the SQL store, NATS (directory RPC, events, JWKS), the identity provider."""
