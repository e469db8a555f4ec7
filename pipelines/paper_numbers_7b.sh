#!/usr/bin/env bash
# The paper's numbers -> preference experiment at its own scale, on one GPU:
#
#     bash pipelines/paper_numbers_7b.sh                  # owl, seed 0
#     TRAIT=dolphin SEED=1 bash pipelines/paper_numbers_7b.sh
#
# The recipe is the `paper-7b` preset (subliminal/presets.py; `subliminal presets` prints it):
# a Qwen2.5-7B-Instruct teacher with the trait's system prompt, 30,000 number prompts sampled at
# T=1 (unconstrained, as in the paper), the strict filter, 10,000 kept rows subsampled, and a
# LoRA r=8/alpha=8 student on every linear layer for 3 epochs at lr 2e-4 (linear, 5 warm-up
# steps), effective batch 66 (22 x 3), max length 500, loss on completions only. CUDA is picked
# up automatically (bf16). The model must be in the local Hugging Face cache, or set
# MODEL=/path/to/dir. GENERATIONS and GEN_BATCH override the preset when set. Re-running the
# same command resumes.
set -euo pipefail

TRAIT=${TRAIT:-owl}
SEED=${SEED:-0}
OUT=${OUT:-runs/paper-numbers-${TRAIT}-s${SEED}}

subliminal chain --preset paper-7b --trait "$TRAIT" --seed "$SEED" --out "$OUT" \
    ${MODEL:+--model "$MODEL"} ${GENERATIONS:+--generations "$GENERATIONS"} \
    ${GEN_BATCH:+--gen-batch "$GEN_BATCH"}
