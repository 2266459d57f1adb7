#!/usr/bin/env bash
# Builds .venv-megatron, the test-only venv in which megatron-core's own reader opens our Megatron
# exports (tests/mixforge/export/test_formats.py::test_megatron_core_reads_the_export runs it by
# subprocess). Pinned by requirements/megatron-test.txt; rebuilt only when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-megatron
STAMP="$VENV/.installed-$(cksum < requirements/megatron-test.txt | cut -d' ' -f1)"
if [ -f "$STAMP" ]; then
  exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
echo '*' > "$VENV/.gitignore"  # never committed (Python >= 3.13 venvs do this themselves)
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r requirements/megatron-test.txt
touch "$STAMP"
