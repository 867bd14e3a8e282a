#!/usr/bin/env bash
# The test command: install what is needed, then ruff, mypy and the pytest suite.
# Browser tests need Debian's chromium; PostgreSQL tests run where
# LABELLOOP_TEST_DATABASE_URL is set (CI points it at the local server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will skip"
fi
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/ruff check service learning embeddings tests migrations/env.py
.venv/bin/mypy service learning embeddings
.venv/bin/python -m pytest "$@"
