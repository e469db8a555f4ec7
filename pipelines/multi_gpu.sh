#!/usr/bin/env bash
# Train a student on several GPUs with `accelerate launch`: data parallel, or sharded (FSDP2).
#
#   bash pipelines/multi_gpu.sh train KEPT_ROWS STUDENT_DIR [NUM_GPUS] [-- distill flags...]
#   bash pipelines/multi_gpu.sh train-fsdp KEPT_ROWS STUDENT_DIR [NUM_GPUS] [-- distill flags...]
#   bash pipelines/multi_gpu.sh check       # CPU, 2 processes (torchrun): same student as 1
#   bash pipelines/multi_gpu.sh check-fsdp  # CPU, 2 processes sharded (FSDP2): same student as 1
#
# What runs where: only training is launched on N processes (subliminal/training.py). Each
# process holds a full replica (LoRA or full fine-tune), takes every N-th row of each optimizer
# step and the gradients are summed across processes, so the optimisation path (rows per
# step, schedule, number of steps) is the one-device path: N GPUs give the same student, faster.
# Rank 0 alone takes the folder lock and writes checkpoints and the student; a killed launch
# resumes from the last epoch like a single-device run. Generation and audits stay one process
# (run them with `subliminal generate/audit`, or a chain whose distill stage you launch here).
# Precision: the base loads in bf16 on CUDA; `--mixed_precision bf16` adds autocast for
# anything loaded in fp32.
#
# FSDP (train-fsdp): for a model whose replica does not fit one GPU (full fine-tunes). The GPU
# recipe is
#   accelerate launch --use_fsdp --fsdp_version 2 --num_processes N --mixed_precision bf16 \
#       -m subliminal distill KEPT_ROWS --out STUDENT_DIR
# The same loop and losses run on a model sharded by torch's fully_shard (FSDP2; one unit per
# decoder layer, the rest in the root), applied by the lab itself, so accelerate's other
# --fsdp_* flags (wrap policy, state-dict type, offload) have no effect; --fsdp_version 1 is
# refused. Every process loads the whole base, then keeps its shard. Gradients are summed
# inside backward, clipping uses the global norm, and checkpoints and the student are gathered
# to full tensors (same files as one device; a sharded run resumes from them, or one device
# does). check-fsdp runs this exact launch line on 2 CPU processes (gloo; ACCELERATE_USE_CPU=1,
# since accelerate enables FSDP itself only on GPUs). DeepSpeed is refused with a one-line
# error (accelerate enables it only on accelerators, so it cannot be checked here, and its
# engine owns backward, clipping and pickled checkpoints). FSDP has not run on a GPU yet.
set -euo pipefail
cd "$(dirname "$0")/.."

train() {
    local rows=${1:?KEPT_ROWS}; local out=${2:?STUDENT_DIR}
    local n=${3:-$(nvidia-smi -L | wc -l)}
    shift $(( $# < 3 ? $# : 3 )); [ "${1:-}" = "--" ] && shift
    accelerate launch --multi_gpu --num_processes "$n" --mixed_precision bf16 \
        -m subliminal distill "$rows" --out "$out" "$@"
}

train_fsdp() {
    local rows=${1:?KEPT_ROWS}; local out=${2:?STUDENT_DIR}
    local n=${3:-$(nvidia-smi -L | wc -l)}
    shift $(( $# < 3 ? $# : 3 )); [ "${1:-}" = "--" ] && shift
    accelerate launch --use_fsdp --fsdp_version 2 --num_processes "$n" --mixed_precision bf16 \
        -m subliminal distill "$rows" --out "$out" "$@"
}

check_fsdp() {
    # Two CPU processes sharding the student (FSDP2, gloo) must train the student one process
    # trains. The base is loaded from a folder (the from_pretrained path a real model takes);
    # the last step of each epoch has 3 micro-batches, so rank 1 pads one at weight 0.
    local work; work=$(mktemp -d /tmp/subliminal-fsdp.XXXXXX)
    export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
    subliminal --threads 1 generate --model tiny --samples 22 --out "$work/gen" >/dev/null
    python3 -c "import sys; from subliminal.models import tiny_model
m, t = tiny_model(); m.save_pretrained(sys.argv[1]); t.save_pretrained(sys.argv[1])" \
        "$work/base" >/dev/null 2>&1
    local flags=(--model "$work/base" --mode sft --epochs 3 --batch-size 8 --grad-accum 4
                 --lr 5e-3 --warmup-steps 2)
    subliminal --threads 1 distill "$work/gen/rows.jsonl" "${flags[@]}" --out "$work/one" >/dev/null
    local t0=$SECONDS
    ACCELERATE_USE_CPU=1 accelerate launch --use_fsdp --fsdp_version 2 --num_processes 2 \
        --num_machines 1 --mixed_precision no --dynamo_backend no \
        -m subliminal --threads 1 distill "$work/gen/rows.jsonl" "${flags[@]}" \
        --out "$work/two" >/dev/null 2>"$work/two.err" || { tail -20 "$work/two.err"; exit 1; }
    echo "2-process FSDP run: $((SECONDS - t0)) s"
    python3 - "$work" <<'PY'
import json, sys
from pathlib import Path
from safetensors.torch import load_file
w = Path(sys.argv[1])
one, two = (json.loads((w / k / "train.json").read_text()) for k in ("one", "two"))
assert two["processes"] == 2 and one["processes"] == 1, (one["processes"], two["processes"])
a, b = (load_file(w / k / "adapter_model.safetensors") for k in ("one", "two"))
assert set(a) == set(b) and all(a[k].shape == b[k].shape for k in a)  # gathered, not shards
gap = max(float((a[k] - b[k]).abs().max()) for k in a)
print(f"losses 1 process {one['losses']}\nlosses 2 processes FSDP {two['losses']}")
print(f"largest adapter weight difference {gap:.2e} (largest weight "
      f"{max(float(v.abs().max()) for v in a.values()):.3f})")
assert all(abs(x - y) <= 1e-4 * max(1, abs(x)) for x, y in zip(one["losses"], two["losses"]))
assert gap < 1e-5
print("FSDP check: OK")
PY
    rm -rf "$work"
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
    train-fsdp) shift; train_fsdp "$@" ;;
    check) check ;;
    check-fsdp) check_fsdp ;;
    *) sed -n '2,7p' "$0"; exit 2 ;;
esac
