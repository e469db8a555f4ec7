#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it into a fresh venv (system
# site-packages supply torch & co., so nothing is downloaded or reinstalled; --no-deps), check
# the venv imports the wheel's copy and not this checkout, and run a tiny chain from /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
work=$(mktemp -d /tmp/subliminal-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Build from a copy of the files git knows (tracked + not ignored): no build/ in the checkout.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "$work/src"
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$work/src"
python3 -m venv --system-site-packages "$work/venv"
"$work/venv/bin/pip" install -q --no-deps "$work"/dist/subliminal_lab-*.whl
cd "$work"  # outside the checkout: nothing may resolve to it
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys, importlib.metadata as md
import subliminal, subliminal.records as r
venv = sys.argv[1]
assert subliminal.__file__.startswith(venv), f"imported {subliminal.__file__}, not the wheel"
assert r.resolve_data("audits/animal_preference.json").is_file()  # package data shipped
print("wheel:", md.version("subliminal-lab"), "->", subliminal.__file__)
PY
"$work/venv/bin/subliminal" --threads 1 chain --model tiny --generations 1 --samples 6 \
    --epochs 1 --out "$work/run"
test -f "$work/run/complete.json"
# Portable record: no machine path (venv, checkout, home) in the run's config.
"$work/venv/bin/python" - "$work/run/config.json" <<'PY'
import json, sys
def strings(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from strings(v)
    elif isinstance(x, str):
        yield x
paths = [s for s in strings(json.load(open(sys.argv[1]))) if s.startswith(("/", "~"))]
assert not paths, f"absolute paths in config.json: {paths}"
PY
echo "wheel check: tiny chain complete in $work/run"
