#!/usr/bin/env python3
"""`vacc plan` end to end: a 7B model (vacc init --preset qwen2.5-7b --config-only) on a
flavor file of 64 H100s (8 per node). Checks the JSON schema, that the choice is feasible and
the fastest of the feasible, that pinned dimensions hold, the seed's log lines, that too
little memory is an error naming the smallest requirement, and --fixed on GPUs not visible here
(the profile's memory; --cuda-graphs adds what graphs keep).
Usage: cli_plan_test.py VACC"""
import json
import subprocess
import sys
import tempfile
import os

VACC = sys.argv[1]
FIELDS = ["dp", "tp", "pp", "microbatches", "micro_batch_size", "recompute", "zero",
          "predicted_step_time_s", "predicted_tokens_per_sec", "predicted_tflops_per_device",
          "predicted_peak_memory_bytes", "feasible", "reason"]
FLAVOR = {
    "name": "h100-64",
    "device": {"model": "H100-SXM", "memory_gib": 80},
    "devices_per_node": 8,
    "nodes": 8,
    "links": {"intra_node": {"bandwidth_gbytes_per_s": 450, "latency_us": 3},
              "inter_node": {"bandwidth_gbytes_per_s": 50, "latency_us": 10}},
    "launcher": {"kind": "slurm", "partition": "gpu"},
}
from e2e_checks import check, finish  # noqa: E402


def run(*args):
    return subprocess.run([VACC, "plan", *args], capture_output=True, text=True, timeout=300)


with tempfile.TemporaryDirectory() as tmp:
    model = os.path.join(tmp, "q7b")
    r = subprocess.run([VACC, "init", "--preset", "qwen2.5-7b", "--config-only", model],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    flavor = os.path.join(tmp, "h100-64.json")
    with open(flavor, "w") as f:
        json.dump(FLAVOR, f)
    common = ["--model", model, "--flavor-file", flavor, "--batch", "512", "--seq-len", "4096"]

    # The table and the seed's log.
    r = run(*common)
    check(r.returncode == 0, f"vacc plan failed: {r.stderr}")
    for line in ["The number of candidates is ", "Parallel Graph Compile start...",
                 "Elapsed Time to compile all candidates = ", "The number of possible candidates is ",
                 "Elapsed Time to compute cost for survived candidates = ",
                 "Configuration for parallelism is selected.", "num_stages : ", "Chosen: "]:
        check(line in r.stdout, f"the output lacks {line!r}")

    # JSON: schema, the choice feasible and fastest among the feasible.
    r = run(*common, "--json")
    check(r.returncode == 0, f"vacc plan --json failed: {r.stderr}")
    out = json.loads(r.stdout)
    check(set(out) >= {"chosen", "candidates"}, "JSON lacks chosen/candidates")
    cands = out["candidates"]
    check(len(cands) > 100, f"only {len(cands)} candidates")
    for c in [out["chosen"]] + cands:
        missing = [k for k in FIELDS if k not in c]
        check(not missing, f"candidate lacks {missing}")
        if missing:
            break
    chosen = out["chosen"]
    check(chosen["feasible"], "the chosen candidate is not feasible")
    feasible = [c for c in cands if c["feasible"]]
    check(all(c["predicted_peak_memory_bytes"] <= out["usable_memory_bytes"] for c in feasible),
          "a feasible candidate is over the usable memory")
    check(all(c["predicted_peak_memory_bytes"] > out["usable_memory_bytes"]
              for c in cands if not c["feasible"]), "a rejected candidate fits")
    check(chosen["predicted_step_time_s"] == min(c["predicted_step_time_s"] for c in feasible),
          "the chosen candidate is not the fastest feasible")
    check(chosen["dp"] * chosen["tp"] * chosen["pp"] == 64, "the choice does not use 64 devices")
    check(chosen["micro_batch_size"] * chosen["microbatches"] * chosen["dp"] == 512,
          "the choice does not cover the batch")
    check(0 < chosen["predicted_tflops_per_device"] < 989, "TFLOP/s per device out of range")
    check(all(c["reason"] for c in cands), "a candidate without a reason")

    # --out writes the chosen plan, with a --parallel string that pins it.
    out_path = os.path.join(tmp, "plan.json")
    r = run(*common, "--out", out_path)
    check(r.returncode == 0, f"--out failed: {r.stderr}")
    saved = json.load(open(out_path))
    check(saved["predicted_step_time_s"] == chosen["predicted_step_time_s"], "--out is not the choice")
    r = run(*common, "--json", "--parallel", saved["parallel"])
    check(r.returncode == 0 and len(json.loads(r.stdout)["candidates"]) == 1,
          "the saved --parallel string does not pin the choice")

    # Pinned dimensions hold; the rest is searched.
    r = run(*common, "--json", "--parallel", "pp=2,zero=1")
    check(r.returncode == 0, f"pinned plan failed: {r.stderr}")
    pinned = json.loads(r.stdout)
    check(all(c["pp"] == 2 and c["zero"] == 1 for c in pinned["candidates"]),
          "a candidate breaks the pins pp=2,zero=1")
    check(len({(c["dp"], c["tp"]) for c in pinned["candidates"]}) > 1, "dp/tp not searched")
    r = run(*common, "--json", "--parallel", "tp=4,microbatches=16,recompute=full")
    check(r.returncode == 0, f"pinned plan failed: {r.stderr}")
    c = json.loads(r.stdout)["chosen"]
    check((c["tp"], c["microbatches"], c["recompute"]) == (4, 16, "full"), f"pins not honoured: {c}")

    # The flavor file's device may override the profile's peak: twice the peak, faster steps.
    fast = dict(FLAVOR, device={"model": "H100-SXM", "memory_gib": 80, "peak_tflops": {"bf16": 1978}})
    fast_path = os.path.join(tmp, "h100-fast.json")
    with open(fast_path, "w") as f:
        json.dump(fast, f)
    r = run("--model", model, "--flavor-file", fast_path, "--batch", "512", "--seq-len", "4096", "--json")
    check(r.returncode == 0, f"plan on the overridden flavor failed: {r.stderr}")
    check(json.loads(r.stdout)["chosen"]["predicted_step_time_s"] < 0.75 * chosen["predicted_step_time_s"],
          "device.peak_tflops does not override the profile")

    # Too little memory: an error naming the smallest requirement.
    r = run(*common, "--usable-memory", "0.01")
    check(r.returncode != 0, "too little memory did not fail")
    check("no feasible" in r.stderr and "smallest requirement is" in r.stderr,
          f"unclear error: {r.stderr}")

    # --fixed: the memory of exactly one split, per rank (bench/memory_table.py).
    r = run(*common, "--json", "--fixed", "--parallel", "dp=8,pp=2,tp=4,microbatches=4")
    check(r.returncode == 0, f"--fixed failed: {r.stderr}")
    fixed = json.loads(r.stdout)
    check((fixed["dp"], fixed["pp"], fixed["tp"]) == (8, 2, 4) and len(fixed["ranks"]) == 16,
          "--fixed does not evaluate the given split")

    # --fixed on GPUs this machine cannot see: the device profile's memory, as the search uses
    # (it said "does not fit 0 B"); the CUDA graphs (on by default with one GPU) add the
    # attention scratch they keep, which --no-cuda-graphs leaves out.
    small = os.path.join(tmp, "q05b")
    r = subprocess.run([VACC, "init", "--preset", "qwen2.5-0.5b", "--config-only", small],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    one_gpu = ["--model", small, "--flavor", "gpu-1", "--batch", "8", "--seq-len", "1024",
               "--parallel", "dp=1", "--dtype", "bf16", "--json", "--fixed"]
    eager, graphed = run(*one_gpu, "--no-cuda-graphs"), run(*one_gpu, "--cuda-graphs")
    default = run(*one_gpu)
    check(eager.returncode == 0 and graphed.returncode == 0 and default.returncode == 0,
          f"--fixed on gpu-1 failed: {eager.stderr} {graphed.stderr} {default.stderr}")
    if eager.returncode == 0 and graphed.returncode == 0 and default.returncode == 0:
        e, g = json.loads(eager.stdout), json.loads(graphed.stdout)
        check(json.loads(default.stdout)["predicted_peak_memory_bytes"] == g["predicted_peak_memory_bytes"],
              "one GPU counts the graphs by default")
        both = run(*one_gpu, "--cuda-graphs", "--no-cuda-graphs")
        check(both.returncode != 0 and "excludes" in both.stderr.lower(),
              f"--cuda-graphs with --no-cuda-graphs is one error: {both.stderr}")
        check(e["device_memory_bytes"] > 70 * 2**30 and e["feasible"],
              f"--fixed on gpu-1 takes the profile's memory: {e['device_memory_bytes']}, {e['feasible']}")
        check(g["predicted_peak_memory_bytes"] > e["predicted_peak_memory_bytes"],
              f"--cuda-graphs counts what the graphs keep: {g['predicted_peak_memory_bytes']} vs "
              f"{e['predicted_peak_memory_bytes']}")

finish("cli_plan")
