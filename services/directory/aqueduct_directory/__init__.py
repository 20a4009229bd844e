"""Aqueduct directory: the event-sourced source of truth for orgs, teams, users, tokens and models."""
