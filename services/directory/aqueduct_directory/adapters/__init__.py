"""Adapters: the event store's configuration, the outbox relay, the KV snapshot projection."""
