#!/usr/bin/env bash
# The test command: install what is needed, then ruff, mypy and the pytest suite.
# Browser tests need Debian's chromium; PostgreSQL tests run where
# LABELLOOP_TEST_DATABASE_URL is set (CI points it at the local server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# Debian packages the suite uses: chromium (browser tests) and dataset-fashion-mnist (the
# Fashion-MNIST simulation tests); installed when root with apt, else those tests skip
apt_missing=()
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_missing+=(dataset-fashion-mnist)
if [ ${#apt_missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq || true
  for pkg in "${apt_missing[@]}"; do
    apt-get install -y -qq "$pkg" >/dev/null || echo "$pkg not installed"
  done
fi
[ -x /usr/bin/chromium ] || echo "no /usr/bin/chromium: browser tests will skip"
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
  || echo "no dataset-fashion-mnist (apt-get install dataset-fashion-mnist): Fashion-MNIST tests will skip"
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/ruff check service learning embeddings lab tests service/migrations/env.py
.venv/bin/mypy service learning embeddings lab
.venv/bin/python -m pytest "$@"
