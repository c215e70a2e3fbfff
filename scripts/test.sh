#!/usr/bin/env bash
# Install everything the test suite needs into .venv and run it.
# Used by the README and by CI (.ci/run); safe to run again (installs are incremental).
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless Chromium renders the audit's HTML report to a PNG in one test (skipped without it).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium for the report screenshot test"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null \
        || echo "chromium could not be installed; the screenshot test will be skipped"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
echo "== installing prefstream with its test extras (torch==2.13.0, the CPU wheel)"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test,oracle]" 2>&1 | grep -v "is ignored: it is neither" || true
.venv/bin/python -c "import torch, prefstream; assert torch.__version__.startswith('2.13.0'), torch.__version__"

echo "== running the tests"
exec .venv/bin/pytest "$@"
