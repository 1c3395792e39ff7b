#!/usr/bin/python3
"""`vacc train` chooses its own split: without --parallel the planner plans on rank 0, logs
it in the seed's words and writes the plan (chosen + every candidate) to the run's folder;
a partial --parallel keeps its pins; with a per-device memory budget too small for a plain
replica it picks a split that fits, the job stays under the budget, and the losses are those
of one device."""
import json
import os
import subprocess
import sys
import tempfile

VACC, CONFIG = sys.argv[1], sys.argv[2]
from e2e_checks import check, finish  # noqa: E402


COMMON = ["--model-config", CONFIG, "--synthetic", "--batch", "8", "--seq-len", "64",
          "--steps", "4", "--lr", "3e-3"]


def train(tmp, tag, flavor, *extra):
    metrics = os.path.join(tmp, tag + ".jsonl")
    cmd = [VACC, "train", *COMMON, "--flavor", flavor, "--metrics-out", metrics,
           "--save", os.path.join(tmp, tag), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, VACC_HOME=os.path.join(tmp, "home")))
    rows = [json.loads(l) for l in open(metrics)] if r.returncode == 0 else []
    return r, rows


def plan_of(tmp, tag):
    with open(os.path.join(tmp, tag, "parallel_plan.json")) as f:
        return json.load(f)


def same_losses(a, b, what):
    la, lb = [x["loss"] for x in a], [x["loss"] for x in b]
    ok = len(la) == len(lb) == 4 and all(abs(x - y) <= 1e-5 * abs(y) for x, y in zip(la, lb))
    check(ok, f"{what}: losses {la} equal one device's {lb}")


with tempfile.TemporaryDirectory() as tmp:
    r1, one = train(tmp, "one", "cpu-1", "--parallel", "dp=1,pp=1,tp=1,zero=0,microbatches=1,recompute=none")
    check(r1.returncode == 0, f"cpu-1 runs: {r1.stderr[-2000:]}")
    check("Configuration for parallelism is given (--parallel)" in r1.stdout + r1.stderr,
          "a split pinned whole is used as given")

    # No --parallel: the planner, in the seed's words, and its plan file.
    r, rows = train(tmp, "auto", "cpu-2")
    check(r.returncode == 0, f"cpu-2 with the planner runs: {r.stderr[-2000:]}")
    log = r.stdout + r.stderr
    for line in ["Automatic parallelization", "The number of candidates is", "Parallel Graph Compile start...",
                 "Elapsed Time to compile all candidates", "The number of possible candidates is",
                 "Elapsed Time to compute cost for survived candidates", "Configuration for parallelism is selected.",
                 "num_stages : ", "recomputation : ", "distribute_param : ", "The selected configuration is written to"]:
        check(line in log, f"the log says {line!r}")
    check(log.index("is ready to use") < log.index("The number of candidates is"),
          "planning follows the accelerator being ready, as in the seed's log")
    if r.returncode == 0:
        plan = plan_of(tmp, "auto")
        for key in ["dp", "tp", "pp", "microbatches", "micro_batch_size", "recompute", "zero",
                    "predicted_step_time_s", "predicted_tokens_per_sec", "predicted_tflops_per_device",
                    "predicted_peak_memory_bytes", "feasible", "reason", "describe", "parallel", "candidates"]:
            check(key in plan, f"the plan file has {key!r}")
        check(plan["dp"] * plan["pp"] * plan["tp"] == 2, f"the plan uses both devices: {plan['parallel']}")
        check(plan["describe"] in log, "the plan file's split is the one logged")
        check(len(plan["candidates"]) > 1 and all(c["feasible"] for c in plan["candidates"]),
              "with 11 GiB per device every candidate fits")
        same_losses(rows, one, "cpu-2, planner's choice " + plan["parallel"])

    # A partial --parallel: the pins stay, the planner fills in the rest.
    r, rows = train(tmp, "pinned", "cpu-2", "--parallel", "pp=2", "--micro-batches", "4")
    check(r.returncode == 0, f"cpu-2 pp=2 runs: {r.stderr[-2000:]}")
    if r.returncode == 0:
        plan = plan_of(tmp, "pinned")
        check(plan["pp"] == 2 and plan["dp"] == 1 and plan["microbatches"] == 4,
              f"pins kept: {plan['parallel']}")
        check("pinned by --parallel: pp=2, microbatches=4" in r.stdout + r.stderr, "the log names the pins")
        same_losses(rows, one, "cpu-2 pp=2")

    # A budget between the smallest and the largest candidate: plans that do not fit are
    # rejected, the chosen one fits, and the job stays under the budget.
    p = subprocess.run([VACC, "plan", *COMMON[:2], "--batch", "8", "--seq-len", "64", "--flavor", "cpu-2",
                        "--json", "--device-peak-tflops", "0.1"], capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"vacc plan runs: {p.stderr}")
    mems = sorted(c["predicted_peak_memory_bytes"] for c in json.loads(p.stdout)["candidates"])
    budget_mib = int((mems[0] + mems[-1]) / 2 / 0.8 / 2**20)
    r, rows = train(tmp, "tight", f"cpu-2x{budget_mib}m")
    check(r.returncode == 0, f"cpu-2x{budget_mib}m runs: {r.stderr[-2000:]}")
    if r.returncode == 0:
        plan = plan_of(tmp, "tight")
        rejected = [c for c in plan["candidates"] if not c["feasible"]]
        check(rejected and all("over the usable" in c["reason"] for c in rejected),
              f"a {budget_mib} MiB budget rejects some candidates, saying why")
        check(plan["predicted_peak_memory_bytes"] <= 0.8 * budget_mib * 2**20, "the chosen plan fits 80%")
        peak = max(max(x["peak_memory_bytes"]) for x in rows)
        check(peak <= budget_mib * 2**20, f"the job stays under the budget: {peak} <= {budget_mib} MiB")
        same_losses(rows, one, f"cpu-2x{budget_mib}m, " + plan["parallel"])
        print(f"cpu-2x{budget_mib}m: {len(rejected)} of {len(plan['candidates'])} candidates rejected; "
              f"chose {plan['parallel']}, peak {peak / 2**20:.1f} MiB")

    # Nothing fits: one clear error before any step.
    r, _ = train(tmp, "none", "cpu-2x1m")
    check(r.returncode != 0 and "no feasible configuration" in r.stderr and "memory budget" in r.stderr,
          f"no split fits 1 MiB: one clear error: {r.stderr[-1500:]}")

finish("train_planner")
