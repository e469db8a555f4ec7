#!/usr/bin/env bash
# Train a student on several GPUs with `accelerate launch` (data parallel, one replica per GPU).
#
#   bash pipelines/multi_gpu.sh train KEPT_ROWS STUDENT_DIR [NUM_GPUS] [-- distill flags...]
#   bash pipelines/multi_gpu.sh check      # CPU, 2 processes (torchrun): same student as 1
#
# What runs where: only training is launched on N processes (subliminal/training.py). Each
# process holds a full replica (LoRA or full fine-tune), takes every N-th row of each optimizer
# step and the gradients are summed across processes, so the optimisation path (rows per
# step, schedule, number of steps) is the one-device path: N GPUs give the same student, faster.
# Rank 0 alone takes the folder lock and writes checkpoints and the student; a killed launch
# resumes from the last epoch like a single-device run. Generation and audits stay one process
# (run them with `subliminal generate/audit`, or a chain whose distill stage you launch here).
# Precision: the base loads in bf16 on CUDA; `--mixed_precision bf16` adds autocast for
# anything loaded in fp32. DeepSpeed and FSDP are refused with a one-line error (the loop does
# its own gradient reduction); a 7B LoRA student fits one H100 per replica.
set -euo pipefail
cd "$(dirname "$0")/.."

train() {
    local rows=${1:?KEPT_ROWS}; local out=${2:?STUDENT_DIR}
    local n=${3:-$(nvidia-smi -L | wc -l)}
    shift $(( $# < 3 ? $# : 3 )); [ "${1:-}" = "--" ] && shift
    accelerate launch --multi_gpu --num_processes "$n" --mixed_precision bf16 \
        -m subliminal distill "$rows" --out "$out" "$@"
}

check() {
    # Two CPU processes (gloo) must train the student one process trains.
    local work; work=$(mktemp -d /tmp/subliminal-mgpu.XXXXXX)
    export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
    subliminal --threads 1 generate --model tiny --samples 12 --out "$work/gen" >/dev/null
    subliminal --threads 1 distill "$work/gen/rows.jsonl" --model tiny --epochs 2 --mode sft --grad-accum 2 \
        --out "$work/one" >/dev/null
    # accelerate launch --multi_gpu is torchrun underneath; on CPU call torchrun directly.
    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 \
        -m subliminal --threads 1 distill "$work/gen/rows.jsonl" --model tiny --epochs 2 --mode sft --grad-accum 2 \
        --out "$work/two" >/dev/null
    python3 - "$work" <<'PY'
import json, sys
from pathlib import Path
import torch
from safetensors.torch import load_file
w = Path(sys.argv[1])
one, two = (json.loads((w / k / "train.json").read_text()) for k in ("one", "two"))
assert two["processes"] == 2 and one["processes"] == 1, (one["processes"], two["processes"])
a, b = (load_file(w / k / "adapter_model.safetensors") for k in ("one", "two"))
gap = max(float((a[k] - b[k]).abs().max()) for k in a)
print(f"losses 1 process {one['losses']}\nlosses 2 processes {two['losses']}")
print(f"largest adapter weight difference {gap:.2e}")
assert all(abs(x - y) <= 1e-4 * max(1, abs(x)) for x, y in zip(one["losses"], two["losses"]))
assert gap < 1e-5
print("multi-process check: OK")
PY
    rm -rf "$work"
}

case "${1:-}" in
    train) shift; train "$@" ;;
    check) check ;;
    *) sed -n '2,5p' "$0"; exit 2 ;;
esac
