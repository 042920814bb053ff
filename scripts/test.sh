#!/usr/bin/env bash
# Install (idempotent) and run the whole test suite: unit tests on tiny random models,
# end-to-end tests on the embedded model, AppTest page tests and the real-browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q -ra "$@"
