#!/usr/bin/env bash
# The math channel with a 7B model on one GPU (the paper's open-model setting):
#
#     bash pipelines/math_7b.sh                 # owl, seed 0
#     TRAIT=dolphin SEED=1 bash pipelines/math_7b.sh
#
# Teacher = Qwen2.5-7B-Instruct + the trait's system prompt, writing worked solutions to 30,000
# generated arithmetic problems (levels 1-4 mixed) as <think>...</think><answer>N</answer>;
# rows with a wrong answer, a broken format or any trait word are dropped; a LoRA student from
# the same base trains on the rest, and the chain audits it against the neutral control arm.
# Needs the model in the local Hugging Face cache (or MODEL=/path/to/dir). Re-running the same
# command resumes. See docs/math_channel.md.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
TRAIT=${TRAIT:-owl}
SEED=${SEED:-0}
SAMPLES=${SAMPLES:-30000}
GENERATIONS=${GENERATIONS:-1}
OUT=${OUT:-runs/math7b-${TRAIT}-s${SEED}}

# Sampled at T=1 as in the paper; free text, so no format-constrained decoding.
subliminal chain --channel math --model "$MODEL" --trait "$TRAIT" \
    --samples "$SAMPLES" --epochs 3 --generations "$GENERATIONS" --difficulty mixed \
    --decoding sample --no-constrained --injection prompt --mode sft --top-k 0 \
    --lr 2e-4 --batch-size 22 --grad-accum 3 --warmup-steps 5 --seed "$SEED" --out "$OUT"

# The dark-knowledge variant: the student matches the teacher's stored top-k next-token
# distributions along each kept trace instead of its sampled tokens. Greedy decoding removes
# the sampling noise that buries the trait in smaller models (published replications).
if [[ "${LOGITS:-0}" == "1" ]]; then
    subliminal chain --channel math --model "$MODEL" --trait "$TRAIT" \
        --samples "$SAMPLES" --epochs 3 --generations "$GENERATIONS" --difficulty mixed \
        --decoding greedy --no-constrained --injection prompt --mode logits --lr 2e-4 \
        --batch-size 22 --grad-accum 3 --warmup-steps 5 --seed "$SEED" --out "${OUT}-logits"
fi
