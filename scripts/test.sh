#!/usr/bin/env bash
# Set up, run the whole test suite offline (nothing may download at run time), then check the
# package as a user gets it: scripts/wheel_check.sh builds the wheel, installs it in a fresh
# venv and runs a tiny chain from outside the checkout. SKIP_WHEEL=1 skips that last part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m pytest --durations=25 "$@"   # the slowest tests listed: what the fast lane leaves out
if [ "${SKIP_WHEEL:-0}" != "1" ]; then
    bash scripts/wheel_check.sh
fi
