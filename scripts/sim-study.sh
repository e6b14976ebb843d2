#!/bin/sh
# The #21 study: zoe sim at each load and seed, Zoe's policies in every
# allocation style and zoe's new policies in the flexible style, one JSON
# file per (load, seed, set); then scripts/sim-study-table.py summarises.
#   scripts/sim-study.sh OUT_DIR [APPLICATIONS]
set -eu
out=${1:?usage: sim-study.sh OUT_DIR [APPLICATIONS]}
apps=${2:-20000}
zoe=${ZOE:-target/release/zoe}
mkdir -p "$out"
for load in 0.5 0.7 0.9 1.1; do
  for seed in 1 2 3 4 5; do
    f="$out/zoe-$load-$seed.json"
    [ -s "$f" ] || nice -n 10 "$zoe" sim --applications "$apps" --load "$load" --seed "$seed" \
      --policy fifo,size,dynsize --style rigid,greedy,flexible --json > "$f.tmp" && mv "$f.tmp" "$f"
    f="$out/new-$load-$seed.json"
    [ -s "$f" ] || nice -n 10 "$zoe" sim --applications "$apps" --load "$load" --seed "$seed" \
      --policy size+preempt,size+reserve,size+preempt+reserve,dynsize+preempt,fairshare,fairshare+preempt \
      --style flexible --json > "$f.tmp" && mv "$f.tmp" "$f"
  done
done
