"""The auth service: local accounts, single sign-on (OIDC), session tokens verified everywhere else."""
