#!/usr/bin/env sh
# Installs the coding agents the end-to-end tests drive (Claude Code and the Codex CLI, pinned in
# package-lock.json). `make test-deps` calls this; the agent tests skip with a clear reason when it has not run.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
