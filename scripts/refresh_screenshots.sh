#!/usr/bin/env bash
# Refresh the README's screenshots (docs/screenshots/*.png): run the browser tests that take
# them (tests/system/browser/conftest.py's shot()) into a fresh artifacts folder and copy what they
# saved. The ordinary test run writes them to test-artifacts/screenshots/ only, so running
# the suite never changes committed files. Needs Debian's chromium (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  echo "refresh_screenshots: /usr/bin/chromium is missing (apt-get install chromium)" >&2
  exit 1
fi
mapfile -t files < <(grep -l '^ *shot(' tests/system/browser/test_*.py)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMP_WAIT_POLICY=PASSIVE
LABELLOOP_ARTIFACTS="$out" .venv/bin/python -m pytest -q -p no:cacheprovider "${files[@]}" "$@"
shopt -s nullglob
shots=("$out"/screenshots/*.png)
if [ ${#shots[@]} -eq 0 ]; then
  echo "refresh_screenshots: the tests saved no screenshot (skipped?)" >&2
  exit 1
fi
mkdir -p docs/screenshots
cp "${shots[@]}" docs/screenshots/
echo "refreshed ${#shots[@]} screenshots in docs/screenshots:"
for f in "${shots[@]}"; do echo "  $(basename "$f")"; done
