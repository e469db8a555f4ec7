#!/bin/bash
# The second part of the issue-14 validation (17:15-17:45 UTC), run beside run_v2.sh:
#   nohup bash benchmarks/scanval/run_v4.sh > runs/scanval/run_v4.log 2>&1 &
# It waits for the gen_more generation (runs/scanval/gen_more.pid) and for run_v2.sh. As run, its
# math generation ended (no summary line, no error) after 96 of the 224 math_t00 prompts, and
# its ref-math jobs never ran (docs/scan_validation.md, "Commands"). Copied from
# runs/scanval/run_v4.sh with the generation script's new path.
cd /work/main
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
while kill -0 $(cat runs/scanval/gen_more.pid) 2>/dev/null; do sleep 10; done
echo "gen math more $(date -u +%T)"
nice -n 5 python benchmarks/scanval/gen_pools.py "math_t00:math:0:224;ref-math_t00:math:0:96;ref-math_t07:math:0.7:96;ref-math_t10:math:1.0:96" &
GEN=$!
while kill -0 $(cat runs/scanval/run_v2.pid) 2>/dev/null; do sleep 10; done
V="python benchmarks/validate_scan.py score --root runs/scanval"
echo "score animals 50:100 $(date -u +%T)"
$V --pools eagle-s1_t10,elephant-s1_t10,wolf-s1_t10,cat-s1_t10 --rows 50:100
wait $GEN
echo "score math $(date -u +%T)"
mkdir -p runs/scanval/scores_superseded && mv runs/scanval/scores/*math*.npz runs/scanval/scores_superseded/
$V --pools ref-math_t00,ref-math_t07,ref-math_t10,math_t00
echo "score negatives 50:100 $(date -u +%T)"
$V --pools random --rows 50:100
$V --pools base_t10 --rows 100:200
echo "done $(date -u +%T)"
