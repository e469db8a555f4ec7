#!/usr/bin/env bash
# Set up, then run the whole test suite offline (nothing may download at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m pytest "$@"
