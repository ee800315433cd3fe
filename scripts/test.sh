#!/usr/bin/env bash
# Sets up .venv with the development tools and runs every check serversync has:
# ruff (lint and format), mypy --strict, and the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
.venv/bin/pytest
