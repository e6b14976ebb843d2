#!/bin/sh
# The #21 study: zoe sim at each load and seed, Zoe's policies in every
# allocation style and zoe's new policies in the flexible style, one JSON
# file per (load, seed, set), kept across reruns; then
# scripts/sim-study-table.py summarises them.
#   scripts/sim-study.sh OUT_DIR [APPLICATIONS]
set -eu
out=${1:?usage: sim-study.sh OUT_DIR [APPLICATIONS]}
apps=${2:-20000}
zoe=${ZOE:-target/release/zoe}
mkdir -p "$out"
run() { # FILE ARGS...
  f=$1
  shift
  if [ ! -s "$f" ]; then
    nice -n 10 "$zoe" sim --applications "$apps" --json "$@" > "$f.tmp"
    mv "$f.tmp" "$f"
  fi
}
for load in 0.5 0.7 0.9 1.1; do
  for seed in 1 2 3 4 5; do
    run "$out/zoe-$load-$seed.json" --load "$load" --seed "$seed" \
      --policy fifo,size,dynsize --style rigid,greedy,flexible
    run "$out/new-$load-$seed.json" --load "$load" --seed "$seed" --style flexible \
      --policy size+preempt,size+reserve,size+preempt+reserve,dynsize+preempt,fairshare,fairshare+preempt
  done
done
