#!/usr/bin/env python3
"""The planner against measurement on a local CPU flavor with a per-device memory budget:
every candidate the planner finds feasible is run (every dimension pinned) for a few steps
of `vacc train --synthetic`, and compared with the planner's prediction for it — step time
(the fastest step after the first) and peak memory (the allocator's high-water mark, the
largest rank's). The prediction for a run uses the matrix-product peak that run measured
(every rank at once, as `vacc train` does when it plans), so a busy machine moves both
sides alike. The planner's choice (`vacc plan` with the median of those peaks) is then
compared with the best measured split. Prints a Markdown table and a summary; --json-out
keeps every figure.

Usage: plan_accuracy.py VACC CONFIG --flavor cpu-4x50m [--batch 16 --seq-len 128 --steps 3]"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

p = argparse.ArgumentParser()
p.add_argument("vacc")
p.add_argument("config")
p.add_argument("--flavor", required=True, help="e.g. cpu-4x50m: the budget makes plans differ")
p.add_argument("--batch", type=int, default=16)
p.add_argument("--seq-len", type=int, default=128)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--passes", type=int, default=2,
               help="runs of each split, in a shuffled order each pass (this machine's speed drifts "
                    "over minutes); the fastest step of all passes counts")
p.add_argument("--json-out")
p.add_argument("--from-json", help="no runs: the measurements of an earlier --json-out, predicted again "
                                   "by this vacc (after a change to the cost model)")
args = p.parse_args()

COMMON = ["--model-config", args.config, "--batch", str(args.batch), "--seq-len", str(args.seq_len),
          "--flavor", args.flavor]
PEAK = re.compile(r"Measured peak per device \(f32 matrix products\): ([0-9.]+) GFLOP/s")


def plan(peak_gflops, parallel=None):
    cmd = [args.vacc, "plan", "--json", "--dtype", "f32", "--device-peak-tflops", str(peak_gflops / 1000),
           *COMMON]
    if parallel:
        # One split's prediction, whether or not the model says it fits: the flavor without
        # its budget (the prediction does not depend on it; the same measured profile).
        cmd[cmd.index(args.flavor)] = args.flavor.split("x")[0]
        cmd += ["--parallel", parallel]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr)
    return json.loads(r.stdout)


def pin(c):
    return (f"dp={c['dp']},pp={c['pp']},tp={c['tp']},zero={c['zero']},microbatches={c['microbatches']},"
            f"recompute={c['recompute']},schedule={c['schedule']}")


rows = []
if args.from_json:
    with open(args.from_json) as f:
        for row in json.load(f)["rows"]:
            predicted = plan(row["peak_gflops"], row["parallel"])["chosen"]
            row["predicted_step_s"] = predicted["predicted_step_time_s"]
            row["predicted_peak_bytes"] = predicted["predicted_peak_memory_bytes"]
            rows.append(row)
    feasible = rows
else:
    feasible = [c for c in plan(100.0)["candidates"] if c["feasible"]]
    print(f"{args.flavor}: {len(feasible)} feasible candidates; running each for {args.steps} steps",
          file=sys.stderr)
def run(split, tmp, i):
    metrics = os.path.join(tmp, f"m{i}.jsonl")
    r = subprocess.run([args.vacc, "train", "--synthetic", "--steps", str(args.steps), "--metrics-out", metrics,
                        "--parallel", split, *COMMON], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{split}: {r.stdout[-3000:]}{r.stderr[-3000:]}")
    steps = [json.loads(l) for l in open(metrics)]
    measured = min(x["step_time_s"] for x in steps[1:] or steps)
    memory = max(max(x["peak_memory_bytes"]) for x in steps)
    peak = float(PEAK.search(r.stdout + r.stderr).group(1))
    return measured, memory, peak


if not args.from_json:
    splits = [pin(c) for c in feasible]
    best_of = {}  # split -> (measured step, memory, the peak of that run)
    order = list(range(len(splits)))
    rng = random.Random(1234)
    with tempfile.TemporaryDirectory() as tmp:
        for pass_ in range(args.passes):
            rng.shuffle(order)
            for n, i in enumerate(order):
                measured, memory, peak = run(splits[i], tmp, i)
                old = best_of.get(splits[i])
                if old is None or measured < old[0]:
                    best_of[splits[i]] = (measured, max(memory, old[1] if old else 0), peak)
                print(f"pass {pass_ + 1}/{args.passes} [{n + 1}/{len(splits)}] {splits[i]}: {measured:.3f} s "
                      f"(peak {peak:.1f} GFLOP/s)", file=sys.stderr, flush=True)
    for split in splits:
        measured, memory, peak = best_of[split]
        predicted = plan(peak, split)["chosen"]
        rows.append({"parallel": split, "peak_gflops": peak, "measured_step_s": measured,
                     "predicted_step_s": predicted["predicted_step_time_s"], "measured_peak_bytes": memory,
                     "predicted_peak_bytes": predicted["predicted_peak_memory_bytes"]})

median_peak = statistics.median(r["peak_gflops"] for r in rows)
choice = pin(plan(median_peak)["chosen"])
best = min(rows, key=lambda r: r["measured_step_s"])
chosen = next(r for r in rows if r["parallel"] == choice)
step_errors = [abs(r["predicted_step_s"] - r["measured_step_s"]) / r["measured_step_s"] for r in rows]
memory_errors = [abs(r["predicted_peak_bytes"] - r["measured_peak_bytes"]) / r["measured_peak_bytes"] for r in rows]

short = lambda s: s.replace(",schedule=1f1b", "")
print("| split | predicted step | measured step | error | predicted peak | measured peak | error |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in sorted(rows, key=lambda r: r["measured_step_s"]):
    mark = (" **(chosen)**" if r is chosen else "") + (" *(best)*" if r is best else "")
    print(f"| {short(r['parallel'])}{mark} | {r['predicted_step_s']:.3f} s | {r['measured_step_s']:.3f} s | "
          f"{100 * (r['predicted_step_s'] / r['measured_step_s'] - 1):+.0f}% | "
          f"{r['predicted_peak_bytes'] / 2**20:.1f} MiB | {r['measured_peak_bytes'] / 2**20:.1f} MiB | "
          f"{100 * (r['predicted_peak_bytes'] / r['measured_peak_bytes'] - 1):+.1f}% |")
summary = {
    "flavor": args.flavor, "candidates_run": len(rows), "median_peak_gflops": median_peak,
    "chosen": choice, "chosen_measured_step_s": chosen["measured_step_s"],
    "best": best["parallel"], "best_measured_step_s": best["measured_step_s"],
    "chosen_vs_best": chosen["measured_step_s"] / best["measured_step_s"] - 1,
    "median_step_error": statistics.median(step_errors),
    "max_memory_error": max(memory_errors),
    "memory_within_10pct": sum(e <= 0.10 for e in memory_errors),
}
print(f"\n{args.flavor}: {len(rows)} feasible splits run; planner's choice {short(choice)} measured "
      f"{chosen['measured_step_s']:.3f} s, the best {short(best['parallel'])} {best['measured_step_s']:.3f} s "
      f"(choice {100 * summary['chosen_vs_best']:.1f}% slower); median step-time error "
      f"{100 * summary['median_step_error']:.1f}%; peak memory within 10% for "
      f"{summary['memory_within_10pct']}/{len(rows)} (largest error {100 * summary['max_memory_error']:.1f}%)")
if args.json_out:
    with open(args.json_out, "w") as f:
        json.dump({"summary": summary, "rows": rows}, f, indent=1)
