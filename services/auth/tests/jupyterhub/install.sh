#!/usr/bin/env sh
# Installs a real JupyterHub (its own virtual environment, pinned in requirements.txt) and its proxy
# (npm package configurable-http-proxy, pinned in package-lock.json) for the JupyterHub bridge tests.
# CI calls this before `make test`; the tests skip with a clear reason when it has not run.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
if command -v uv >/dev/null 2>&1; then UV=uv; else UV=../../../../.tools/bin/uv; fi
"$UV" venv --allow-existing -p 3.11 .venv
"$UV" pip install -p .venv/bin/python -r requirements.txt
