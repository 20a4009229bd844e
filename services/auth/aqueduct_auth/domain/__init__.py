"""The auth service's rules: who is signing in, what a session says, how attempts are limited."""
