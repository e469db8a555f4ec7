#!/bin/bash
# The issue-14 validation grid as first run (2026-11-23 16:22-17:26 UTC), one process at a time,
# 1 thread (see docs/scan_validation.md, "Commands"). Run from anywhere:
#   nohup bash benchmarks/scanval/run_v2.sh > runs/scanval/run_v2.log 2>&1 &
# It waits for the adapter training (runs/scanval/train_v2.pid; benchmarks/scanval/
# train_adapters.py) to end. Copied from runs/scanval/run_v2.sh with the generation script's
# new path.
cd /work/main
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
while kill -0 $(cat runs/scanval/train_v2.pid) 2>/dev/null; do sleep 10; done
V="python benchmarks/validate_scan.py score --root runs/scanval"
A="owl-s1_t10,dolphin-s1_t10,eagle-s1_t10,elephant-s1_t10,wolf-s1_t10,cat-s1_t10"
N="base_t00,base_t07,base_t10,neutral-s3_t10,random"
echo "gen numbers $(date -u +%T)"
python benchmarks/scanval/gen_pools.py "ref_t07:base:0.7:32;ref_t10:base:1.0:32;base_t00:base:0:80;base_t07:base:0.7:64;random:random:0:200;neutral-s3_t10:neutral:1.0:64;owl-s1_t10:adapter:1.0:64;dolphin-s1_t10:adapter:1.0:64;eagle-s1_t10:adapter:1.0:64;elephant-s1_t10:adapter:1.0:64;wolf-s1_t10:adapter:1.0:64;cat-s1_t10:adapter:1.0:64"
echo "score refs $(date -u +%T)"
$V --pools ref_t00,ref_t07,ref_t10
echo "score 0:25 $(date -u +%T)"
$V --pools $N,$A --rows 0:25
echo "gen math $(date -u +%T)"
python benchmarks/scanval/gen_pools.py "ref-math_t00:math:0:16;ref-math_t07:math:0.7:16;ref-math_t10:math:1.0:16;math_t00:math:0:32"
echo "score math $(date -u +%T)"
$V --pools ref-math_t00,ref-math_t07,ref-math_t10
$V --pools math_t00 --rows 0:25
echo "score 25:50 $(date -u +%T)"
$V --pools $N,$A --rows 25:50
echo "score 50:100 $(date -u +%T)"
$V --pools base_t10,owl-s1_t10,dolphin-s1_t10 --rows 50:100
echo "done $(date -u +%T)"
