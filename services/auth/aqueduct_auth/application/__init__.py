"""Use cases of the auth service, in plain values."""
