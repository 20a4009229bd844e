#!/usr/bin/env sh
# Installs the test OpenID provider (npm package oidc-provider, pinned in package-lock.json).
# CI calls this before `make test`; the OIDC tests skip with a clear reason when it has not run.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
