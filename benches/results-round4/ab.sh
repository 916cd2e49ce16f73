#!/usr/bin/env bash
# The round-4 A/B (ADR 0025): saturate 50, paced 100 and ttft 100, three runs each, for two gateway
# binaries in turn, on the same load tool. Usage (from the repository root):
#   benches/results-round4/ab.sh BEFORE_BINARY AFTER_BINARY [OUT_DIR]
# e.g. build the old commit's `tars` in a separate checkout (its own target dir: a shared one can hand
# back the other checkout's artifacts), then pass both. Tables: OUT_DIR/<scenario>-<before|after>.txt.
set -euo pipefail
before=$1 after=$2 out=${3:-target/ab}
mkdir -p "$out"
for sc in "saturate 50" "paced 100" "ttft 100"; do
    set -- $sc
    for side in before after; do
        bin=$before; [ "$side" = after ] && bin=$after
        echo "=== $1 $2 $side $(date +%T)"
        cargo bench --bench load -- --tars "$bin" --scenario "$1" --streams "$2" --repeat 3 \
            --json "$out/$1-$side.json" > "$out/$1-$side.txt" 2>&1
    done
done
