#!/usr/bin/env bash
# The math channel with a 7B model on one GPU (the paper's open-model setting):
#
#     bash pipelines/math_7b.sh                 # owl, seed 0
#     TRAIT=dolphin SEED=1 bash pipelines/math_7b.sh
#
# The `paper-7b` preset (subliminal/presets.py) on the math channel: a Qwen2.5-7B-Instruct
# teacher with the trait's system prompt writes worked solutions to 30,000 generated arithmetic
# problems (levels 1-4 mixed) as <think>...</think><answer>N</answer>, sampled at T=1 without a
# format constraint; rows with a wrong answer, a broken format or any trait word are dropped; a
# LoRA student from the same base trains on up to 10,000 of the rest, and the chain audits it
# against the neutral control arm. Needs the model in the local Hugging Face cache (or
# MODEL=/path/to/dir); SAMPLES and GENERATIONS override the preset when set. Re-running the
# same command resumes. See docs/math_channel.md.
set -euo pipefail

TRAIT=${TRAIT:-owl}
SEED=${SEED:-0}
OUT=${OUT:-runs/math7b-${TRAIT}-s${SEED}}
RECIPE=(--preset paper-7b --channel math --difficulty mixed --trait "$TRAIT" --seed "$SEED"
        ${MODEL:+--model "$MODEL"} ${SAMPLES:+--samples "$SAMPLES"}
        ${GENERATIONS:+--generations "$GENERATIONS"})

subliminal chain "${RECIPE[@]}" --out "$OUT"

# The logit variant: the student matches the teacher's stored top-k next-token distributions
# along each kept trace instead of its sampled tokens, decoded greedily (no sampling noise).
# The math channel has no token grammar, so those distributions cannot be restricted to the
# channel: they are the raw top-k (`--logits overt`), the overt-distillation positive control.
if [[ "${LOGITS:-0}" == "1" ]]; then
    subliminal chain "${RECIPE[@]}" --decoding greedy --mode logits --logits overt \
        --out "${OUT}-logits"
fi
