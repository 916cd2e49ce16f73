#!/bin/bash
cd /work/main
L=target/release/deps/load-f4d459a72a94696b
for sc in "saturate 50" "paced 100" "ttft 100"; do
  set -- $sc
  for b in tars-before tars-a2; do
    echo "=== $1 $2 $b $(date +%T)"
    $L --tars /work/scratch/$b --scenario $1 --streams $2 --repeat 3 --json /tmp/r4/$1-$b.json > /tmp/r4/$1-$b.txt 2>&1
  done
done
echo DONE $(date +%T)
