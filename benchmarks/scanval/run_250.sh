#!/bin/bash
# The 250-row part of the issue-14 validation (2026-12-06), rebuilt from nothing on a fresh
# machine (the 2026-11-23 pools and adapters were not kept). Usage, from the repository root:
#   bash benchmarks/scanval/run_250.sh setup            # scanner adapters, references, scored
#   bash benchmarks/scanval/run_250.sh owl dolphin ...  # per item: teacher, pool, 250 rows scored
# Items: an animal (its adapter seed 1, T=1.0, 304 prompts), base (BASE T=1.0, 330 prompts),
# neutral (neutral adapter seed 3, T=1.0, 288 prompts). Each step resumes or skips what exists,
# so two calls with disjoint items may run side by side once setup has finished.
set -euo pipefail
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
B=benchmarks/scanval
V="python benchmarks/validate_scan.py score --root runs/scanval"
step() { echo "$1 $(date -u +%T)"; }
if [ "$1" = setup ]; then
    step "train scanner"
    python $B/train_adapters.py "owl:0;dolphin:0;eagle:0;elephant:0;wolf:0;cat:0;neutral:0;neutral:1;neutral:2"
    step "gen references"
    python $B/gen_pools.py "ref_t00:base:0:32;ref_t07:base:0.7:32;ref_t10:base:1.0:32"
    step "score references"
    $V --pools ref_t00,ref_t07,ref_t10
    step "setup done"
    exit 0
fi
for item in "$@"; do
    case $item in
        base) pool=base_t10; job="base_t10:base:1.0:330" ;;
        neutral) pool=neutral-s3_t10; job="neutral-s3_t10:neutral:1.0:288"
                 step "train neutral:3"; python $B/train_adapters.py "neutral:3" ;;
        *) pool=$item-s1_t10; job="$pool:adapter:1.0:304"
           step "train $item:1"; python $B/train_adapters.py "$item:1" ;;
    esac
    step "gen $pool"; python $B/gen_pools.py "$job"
    step "score $pool"; $V --pools "$pool" --rows 0:250
done
step "done $*"
