#!/usr/bin/env bash
# The paper's numbers -> preference experiment at its own scale, on one GPU:
#
#     bash pipelines/paper_numbers_7b.sh                  # owl, seed 0
#     TRAIT=dolphin SEED=1 bash pipelines/paper_numbers_7b.sh
#
# Qwen2.5-7B-Instruct teacher with the paper's owl system prompt, 30,000 number prompts sampled
# at T=1 (unconstrained, as in the paper), the strict filter, 10,000 kept rows subsampled, and a
# LoRA r=8/alpha=8 student on q,k,v,o,gate,up,down for 3 epochs at lr 2e-4 (linear, 5 warm-up
# steps), effective batch 66 (22 x 3), max length 500, loss on completions only (the
# DistillConfig defaults; the CPU chain's small-run defaults are overridden by the flags). CUDA is picked up automatically (bf16). The model must be in the local
# Hugging Face cache, or set MODEL=/path/to/dir. Re-running the same command resumes.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
TRAIT=${TRAIT:-owl}
SEED=${SEED:-0}
OUT=${OUT:-runs/paper-numbers-${TRAIT}-s${SEED}}

subliminal chain --model "$MODEL" --trait "$TRAIT" --seed "$SEED" --out "$OUT" \
    --generations "${GENERATIONS:-1}" --samples 30000 --max-rows 10000 --epochs 3 \
    --decoding sample --temperature 1 --no-constrained --injection prompt --mode sft --top-k 0 \
    --finetune lora --lora-r 8 --lr 2e-4 --batch-size 22 --grad-accum 3 --warmup-steps 5 \
    --gen-batch "${GEN_BATCH:-128}"
