#!/usr/bin/env bash
# One GPU, under 10 minutes, unattended: what a GPU run of the lab needs measured first.
#
#     bash pipelines/gpu_check.sh                                   # on the GPU machine
#     GPU_CHECK_MODEL=/models/Qwen2.5-0.5B-Instruct bash pipelines/gpu_check.sh
#     bash pipelines/gpu_check.sh --dry-run                         # CPU, tiny model: logic only
#
# Parts, each under its own time limit and each recorded whatever happens (ok; skipped, with
# the reason; failed, with its exit code and the end of its log), so one failure never costs
# the others (docs/gpu.md says what each part answers):
#   env       GPU, driver, torch/CUDA versions, whether vLLM imports
#   train     one LoRA sft training step (the lab's train_step and loss) on the same rows:
#             fp32 weights, fp32 under bf16 autocast, bf16 weights (the lab's CUDA default);
#             median of interleaved repeats, loss and gradient differences from fp32
#   generate  benchmarks/bench_backends.py on $GPU_CHECK_MODEL (a local 0.5-1.5B HF folder):
#             hf against vllm on the paper's decoding (T=1, unconstrained) and greedy, rows/s
#             side by side, greedy agreement, pass rates. Skipped without the model; vllm's
#             half is skipped where vLLM does not import.
#   chain     one generation of the paper-7b recipe at reduced size: $CHAIN_SAMPLES prompts,
#             $CHAIN_ROWS kept rows, 1 epoch, 1 replicate, no side-effect battery, on
#             $GPU_CHECK_MODEL (else the embedded model, else the tiny one); the preset's
#             backend (vllm where it imports)
# Writes $OUT/gpu_check.json (OUT: the device tool's folder when set, else runs/gpu_check) and
# a log per part beside it; rows, teachers and students go to $WORK (default /tmp/gpu_check).
# Limits (seconds): TRAIN_S=90 GENERATE_S=210 CHAIN_S=240, env 30: 570 s in all.
set -uo pipefail   # no -e: a failed part is recorded and the next one runs
cd "$(dirname "$0")/.."

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${GPU_CHECK_OUT:-${OUT:-runs/gpu_check}}
WORK=${WORK:-/tmp/gpu_check}
MODEL=${GPU_CHECK_MODEL:-}
if [ "$DRY" = 1 ]; then
    DEVICE=cpu THREADS=1 GEN_ROWS=${GEN_ROWS:-4} CHAIN_SAMPLES=${CHAIN_SAMPLES:-8}
    CHAIN_ROWS=${CHAIN_ROWS:-8} TRAIN_ROWS=${TRAIN_ROWS:-4} REPEATS=${REPEATS:-2}
    TRAIN_S=${TRAIN_S:-300}   # a shared CPU is slower than the GPU the limits are sized for
else
    DEVICE=cuda THREADS=${THREADS:-8} GEN_ROWS=${GEN_ROWS:-512} CHAIN_SAMPLES=${CHAIN_SAMPLES:-512}
    CHAIN_ROWS=${CHAIN_ROWS:-256} TRAIN_ROWS=${TRAIN_ROWS:-22} REPEATS=${REPEATS:-5}
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export SUBLIMINAL_THREADS=$THREADS
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"

# part NAME LIMIT CMD...: run CMD under a time limit, log to $OUT/NAME.log, status to WORK.
part() {
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (limit ${limit}s)"
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    printf '{"rc": %d, "seconds": %d, "limit_s": %d}\n' "$rc" "$(($(date +%s) - start))" \
        "$limit" >"$WORK/$name.status.json"
    echo "   rc=$rc ($(tail -n 1 "$OUT/$name.log" | cut -c1-160))"
}

# skip NAME REASON: record a part that did not run, and why.
skip() {
    echo "== $1 skipped: $2"
    "$PY" -c 'import json, sys; print(json.dumps({"skipped": sys.argv[1]}))' "$2" \
        >"$WORK/$1.status.json"
}

# The model the train and chain parts use: the given one, else the embedded one when its
# wheel or cache is here, else the tiny one built in code (the logic runs, timings mean little).
base_model() {
    if [ -n "$MODEL" ]; then echo "$MODEL"; return; fi
    if [ "$DRY" = 0 ] && "$PY" -c "from subliminal.models import resolve; resolve('smollm2-135m')" \
        >/dev/null 2>&1; then echo smollm2-135m; else echo tiny; fi
}
BASE=$(base_model)
echo "gpu_check: dry_run=$DRY device=$DEVICE base=$BASE generate_model=${MODEL:-none} out=$OUT"

part env 30 "$PY" - <<'PY'
import importlib.util, json, subprocess, torch, transformers
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                      "--format=csv,noheader"], capture_output=True, text=True) \
    if torch.cuda.is_available() else None
record = {"torch": torch.__version__, "cuda": torch.version.cuda,
          "cuda_available": torch.cuda.is_available(), "transformers": transformers.__version__,
          "gpu": smi.stdout.strip() if smi else None,
          "vllm_importable": importlib.util.find_spec("vllm") is not None}
print(json.dumps(record))
PY

part train "${TRAIN_S:-90}" "$PY" - "$BASE" "$DEVICE" "$TRAIN_ROWS" "$REPEATS" \
    "$WORK/train.json" <<'PY'
"""One LoRA sft step, three precisions, interleaved; differences from fp32."""
import copy, dataclasses, json, statistics, sys, time
import torch
from subliminal.channels import get_channel
from subliminal.distill import DistillConfig, batch_loss, build_examples, make_student
from subliminal.models import load_model
from subliminal.training import LoopConfig, accelerator, train_step, trainable

name, device, out = sys.argv[1], sys.argv[2], sys.argv[5]
n, repeats = int(sys.argv[3]), int(sys.argv[4])
lm = load_model(name, device=device)
rows = [{**p, "completion": [{"role": "assistant", "content": ", ".join(
    str(100 + 37 * (i + j) % 900) for j in range(10))}]}
    for i, p in enumerate(get_channel("numbers").prompts(n, 0))]
cfg = DistillConfig(mode="sft")
examples = build_examples(lm, rows, cfg)
acc = accelerator()
variants = {"fp32": (torch.float32, "no"), "bf16_autocast": (torch.float32, "bf16"),
            "bf16_weights": (torch.bfloat16, "no")}
students = {}
for v, (dtype, _) in variants.items():
    torch.manual_seed(0)
    base = dataclasses.replace(lm, model=copy.deepcopy(lm.model).to(dtype), dtype=dtype)
    model = make_student(base, cfg)
    with torch.no_grad():  # LoRA B starts at zero; a small value gives A a gradient too
        g = torch.Generator().manual_seed(1)
        for k, p in trainable(model).items():
            if "lora_B" in k:
                p.copy_(torch.randn(p.shape, generator=g) * 1e-3)
    students[v] = model
del lm.model  # only the three students stay in memory
pad = lm.tokenizer.pad_token_id

def step(v):
    model, (_, precision) = students[v], variants[v]
    params = list(trainable(model).values())
    for p in params:
        p.grad = None
    def run(idx):
        return batch_loss(model, [examples[i] for i in idx], "sft", pad, lm.device)

    loop = LoopConfig(batch_size=len(examples), grad_accum=1, mixed_precision=precision)
    t = time.perf_counter()
    loss = train_step(run, list(range(len(examples))), params, acc, loop)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, loss, [p.grad.float().clone() for p in params]

for v in variants:
    step(v)  # warm-up: kernels, allocations
times = {v: [] for v in variants}
for r in range(repeats):
    for v in (list(variants) if r % 2 == 0 else list(reversed(variants))):
        times[v].append(step(v)[0])
ref = step("fp32")
record = {"model": name, "device": device, "rows": len(examples),
          "tokens": sum(len(e.ids) for e in examples), "repeats": repeats}
for v in variants:
    _, loss, grads = step(v)
    num = sum((a - b).norm() ** 2 for a, b in zip(grads, ref[2])) ** 0.5
    den = sum(b.norm() ** 2 for b in ref[2]) ** 0.5
    median = statistics.median(times[v])
    record[v] = {"median_s": round(median, 4),
                 "vs_fp32": round(median / statistics.median(times["fp32"]), 3),
                 "loss": round(loss, 5), "loss_rel_diff": abs(loss - ref[1]) / abs(ref[1]),
                 "grad_rel_diff": float(num / den)}
json.dump(record, open(out, "w"), indent=2)
print(json.dumps(record))
PY

if [ -z "$MODEL" ] && [ "$DRY" = 0 ]; then
    skip generate "GPU_CHECK_MODEL is not set: hf-vs-vllm throughput needs a local \
0.5-1.5B HF model folder (e.g. Qwen2.5-0.5B-Instruct)"
else
    GEN_MODEL=${MODEL:-tiny}
    BACKENDS=hf,vllm
    [ "$GEN_MODEL" = tiny ] && BACKENDS=hf   # the engine serves model folders only
    part generate "${GENERATE_S:-210}" "$PY" benchmarks/bench_backends.py --model "$GEN_MODEL" \
        --device "$DEVICE" --threads "$THREADS" --rows "$GEN_ROWS" --backends "$BACKENDS" \
        --cases sample-prompt,greedy-prompt --work "$WORK/generate" --out "$WORK/generate.json"
fi

# The tiny model has no engine form, and writes no valid number unconstrained: give it hf and
# the grammar so its chain has rows to train on.
CHAIN_EXTRA=()
[ "$BASE" = tiny ] && CHAIN_EXTRA=(--backend hf --constrained)
rm -rf "$WORK/chain"
part chain "${CHAIN_S:-240}" "$PY" -m subliminal chain --preset paper-7b --model "$BASE" \
    --samples "$CHAIN_SAMPLES" --max-rows "$CHAIN_ROWS" --epochs 1 --replicates 1 \
    --no-side-effects --device "$DEVICE" "${CHAIN_EXTRA[@]}" --out "$WORK/chain"

# One record: each part's status and what it measured.
"$PY" - "$OUT/gpu_check.json" "$WORK" "$DRY" <<'PY'
import json, sys
from pathlib import Path
out, work, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"

def read(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None

def log_json(name):  # the last JSON line a part printed (env prints its record)
    path = out.parent / f"{name}.log"
    lines = [x for x in path.read_text().splitlines() if x.startswith("{")] \
        if path.exists() else []
    return json.loads(lines[-1]) if lines else None

chain = work / "chain"
record = {"dry_run": dry, "parts": {n: read(work / f"{n}.status.json")
                                    for n in ("env", "train", "generate", "chain")},
          "env": log_json("env"), "train": read(work / "train.json"),
          "generate": read(work / "generate.json"),
          "chain": {"config": read(chain / "config.json"),
                    "stages": {str(p.parent.relative_to(chain)): read(p)
                               for p in sorted(chain.rglob("complete.json"))},
                    "filter": [read(p) for p in sorted(chain.rglob("filter/stats.json"))],
                    "verdicts": [g.get("verdict") for g in (read(chain / "summary.json")
                                                            or {}).get("generations", [])]}}
for name, status in record["parts"].items():  # a failed part: the end of its log
    log = out.parent / f"{name}.log"
    if status and status.get("rc") and log.exists():
        status["log_tail"] = log.read_text(errors="replace").splitlines()[-5:]
out.write_text(json.dumps(record, indent=2) + "\n")
print(f"record: {out}")
PY
