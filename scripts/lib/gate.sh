#!/usr/bin/env bash
# The checks every change passes before its tests run (scripts/check, scripts/test), with what is
# in .venv: lint and complexity, formatting, strict types, and the import contracts.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/ruff check smtpconn lab tests benchmarks
.venv/bin/ruff format --check --quiet smtpconn lab tests benchmarks ||
    { echo "gate: run .venv/bin/ruff format smtpconn lab tests benchmarks" >&2; exit 1; }
.venv/bin/mypy
.venv/bin/lint-imports --no-cache --no-logo
