#!/usr/bin/env python3
"""Summarises scripts/sim-study.sh's JSON files as the Markdown tables of
docs/scheduling.md: means over the seeds (the longest wait: the maximum).
    scripts/sim-study-table.py OUT_DIR"""
import glob, json, os, statistics, sys
from collections import defaultdict

d = sys.argv[1]
# (load, label, class) -> {seed: class report}
runs = defaultdict(dict)
params = None
for f in sorted(glob.glob(os.path.join(d, "*.json"))):
    v = json.load(open(f))
    p = v["parameters"]
    params = p
    for r in v["runs"]:
        label = f'{r["style"]} {r["policy"]}'
        for c in r["classes"]:
            runs[(p["load"], label, c["class"])][p["seed"]] = c

loads = sorted({k[0] for k in runs})
seeds = sorted({s for v in runs.values() for s in v})
classes = ["elastic", "rigid"]

def mean(load, label, cls, key):
    v = runs.get((load, label, cls), {})
    return statistics.mean(c[key] for c in v.values()) if v else float("nan")

def worst(load, label, cls, key):
    v = runs.get((load, label, cls), {})
    return max(c[key] for c in v.values()) if v else float("nan")

def total(load, label, cls, key):
    return sum(c[key] for c in runs.get((load, label, cls), {}).values())

def fmt(x, digits=0):
    return f"{x:,.{digits}f}"

print(f"{params['applications']:,} applications, {params['nodes']} nodes, seeds {seeds[0]}-{seeds[-1]}, "
      f"{params['users']} users, half-life {params['half_life_s']} s, reservation after {params['reservation_after_s']} s\n")

print("### Median turnaround by style (s, mean over seeds; done = applications finished, of all)\n")
zoe_labels = [f"{s} {p}" for p in ["fifo", "size", "dynsize"] for s in ["rigid", "greedy", "flexible"]]
for cls in classes:
    print(f"{cls} class:\n")
    print("| policy | style | " + " | ".join(f"ρ {l}" for l in loads) + " | done at ρ 1.1 |")
    print("|---|---|" + "---|" * len(loads) + "---|")
    for label in zoe_labels:
        style, pol = label.split(" ")
        cells = [fmt(mean(l, label, cls, "turnaround_s_p50")) for l in loads]
        done = total(loads[-1], label, cls, "done") / max(1, total(loads[-1], label, cls, "applications"))
        print(f"| {pol.upper()} | {style} | " + " | ".join(cells) + f" | {done:.2%} |")
    print()

print("### Flexible below rigid on median turnaround? (seeds where it is, of all)\n")
print("| compared | class | " + " | ".join(f"ρ {l}" for l in loads) + " |")
print("|---|---|" + "---|" * len(loads))
for flex, pol in [("fifo", "fifo"), ("size", "size"), ("dynsize", "dynsize"), ("size+preempt", "size"),
                  ("dynsize+preempt", "dynsize")]:
    for cls in classes:
        cells = []
        for l in loads:
            f, r = runs[(l, f"flexible {flex}", cls)], runs[(l, f"rigid {pol}", cls)]
            n = sum(1 for s in seeds if f[s]["turnaround_s_p50"] < r[s]["turnaround_s_p50"])
            cells.append(f"{n}/{len(seeds)}")
        print(f"| flexible {flex} vs rigid {pol} | {cls} | " + " | ".join(cells) + " |")
print()

ours = ["flexible size+preempt", "flexible size+reserve", "flexible size+preempt+reserve",
        "flexible dynsize+preempt", "flexible fairshare", "flexible fairshare+preempt"]
best = ["flexible size", "flexible dynsize"]
for l in loads:
    print(f"### ρ {l}: Zoe's best against the new policies (mean over seeds; longest wait: max over seeds)\n")
    print("| policy | class | TA p50 | TA p95 | runtime p95 (floor) | slowdown p95 | slowdown p99 | longest wait | over 1 d |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label in best + ours:
        for cls in classes:
            print(f"| {label.split(' ')[1]} | {cls} | {fmt(mean(l, label, cls, 'turnaround_s_p50'))} | "
                  f"{fmt(mean(l, label, cls, 'turnaround_s_p95'))} | {fmt(mean(l, label, cls, 'runtime_s_p95'))} | "
                  f"{fmt(mean(l, label, cls, 'slowdown_p95'), 2)} | {fmt(mean(l, label, cls, 'slowdown_p99'), 2)} | "
                  f"{fmt(worst(l, label, cls, 'queue_s_max'))} | {total(l, label, cls, 'waited_over_a_day')} |")
    print()

print("### Room above the floor: Zoe's best p95 turnaround over the runtimes' p95, minus 1 (worst seed)\n")
print("| policy | class | " + " | ".join(f"ρ {l}" for l in loads) + " |")
print("|---|---|" + "---|" * len(loads))
for label in best:
    for cls in classes:
        cells = []
        for l in loads:
            v = runs[(l, label, cls)]
            cells.append(f"{max(c['turnaround_s_p95'] / c['runtime_s_p95'] - 1 for c in v.values()):.1%}")
        print(f"| {label.split(' ')[1]} | {cls} | " + " | ".join(cells) + " |")
print()

print("### New policies against Zoe's best, seed by seed: longest wait no longer (of all seeds × classes)\n")
print("| policy | against | " + " | ".join(f"ρ {l}" for l in loads) + " |")
print("|---|---|" + "---|" * len(loads))
for label in ours:
    for b in best:
        cells = []
        for l in loads:
            n = sum(1 for cls in classes for s in seeds
                    if runs[(l, label, cls)][s]["queue_s_max"] <= runs[(l, b, cls)][s]["queue_s_max"])
            cells.append(f"{n}/{len(seeds) * len(classes)}")
        print(f"| {label.split(' ')[1]} | {b.split(' ')[1]} | " + " | ".join(cells) + " |")
