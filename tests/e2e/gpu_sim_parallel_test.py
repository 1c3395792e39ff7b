#!/usr/bin/python3
"""`vacc train --flavor gpu-N` end to end on simulated GPUs (vacc_sim: the CUDA backend on the
CPU simulator, NCCL's API over MPI; tests/unit_cuda/CMakeLists.txt): one rank per GPU, the
NCCL communicator and its splits, data, pipeline and tensor parallelism, ZeRO, micro-batches
and recomputation give gpu-1's losses and saved weights; bf16 mixed precision too; a flavor
with more GPUs than the machine has is one clear error; `vacc eval` and `vacc generate` on
gpu-1 give the CPU's loss and text; `vacc profile` measures two GPUs and their NCCL links. This runs the multi-GPU path of vacc
itself, not NCCL or two streams at once: those need GPUs (docs/cuda.md)."""
import json
import os
import re
import subprocess
import sys
import tempfile

VACC, CONFIG = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_checks import check, finish  # noqa: E402
from safetensors_read import max_abs_difference, read_safetensors  # noqa: E402

STEPS = 3
WEIGHT_TOLERANCE = 1e-3
ENV = dict(os.environ, VACC_SIM_GPUS="4")


def train(tmp, tag, flavor, parallel, dtype="f32", save=False, extra=()):
    metrics = os.path.join(tmp, tag + ".jsonl")
    folder = os.path.join(tmp, tag) if save else None
    cmd = [VACC, "train", "--model-config", CONFIG, "--synthetic", "--batch", "4", "--seq-len", "32",
           "--steps", str(STEPS), "--lr", "3e-3", "--dtype", dtype, "--flavor", flavor,
           "--metrics-out", metrics] + (["--parallel", parallel] if parallel else []) + \
          (["--save", folder] if folder else []) + list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env=dict(ENV, VACC_HOME=os.path.join(tmp, "home")))
    rows = [json.loads(line)["loss"] for line in open(metrics)] if r.returncode == 0 else None
    return r, rows, folder


def check_graphs(what, log, want):
    """The log says `want`; where graphs were on, they were captured and replayed."""
    check(want in log, f"{what}: the log says '{want}'")
    if "CUDA graphs: on (" in log:
        m = re.search(r"CUDA graphs: (\d+) captured, (\d+) replays \(rank 0\)(.*)", log)
        check(m is not None and int(m.group(1)) > 0 and int(m.group(2)) > 0 and not m.group(3),
              f"{what}: graphs captured and replayed, none given up ({m.group(0) if m else 'no count'})")


def compare(what, got, base, tolerance):
    if got is None or base is None:
        return
    worst = max(abs(a - b) / abs(b) for a, b in zip(got, base))
    check(len(got) == len(base) > 0 and worst <= tolerance,
          f"{what}: losses within {tolerance:g} of the reference's (worst {worst:.2e}: {got} vs {base})")
    print(f"{what}: worst {worst:.1e}", flush=True)


# (flavor, --parallel, save the weights)
# The planner's own choice below adds dp=2 with ZeRO-3 (what it picks for this model).
# --cuda-graphs is asked for on these: on with two pipeline stages; on with data parallelism,
# the backward one graph per layer with the gradient reduction between them; off (saying why)
# with tensor parallelism and ZeRO 2.
GRAPHS = {"dp=1,pp=2,tp=1,zero=0,microbatches=2,recompute=none": "CUDA graphs: on (",
          "dp=1,pp=1,tp=2,zero=0,microbatches=1,recompute=none": "CUDA graphs: off: tensor parallelism",
          "dp=2,pp=1,tp=1,zero=0,microbatches=1,recompute=selective": "one graph per layer",
          "dp=2,pp=1,tp=2,zero=2,microbatches=1,recompute=none": "CUDA graphs: off: ZeRO 2"}
GRAPHS_BF16 = {"dp=2,pp=1,tp=1,zero=1,microbatches=1,recompute=none": "one graph per layer",
               "dp=2,pp=1,tp=1,zero=3,microbatches=2,recompute=none": "CUDA graphs: off: ZeRO 3"}
SPLITS = [
    ("gpu-2", "dp=1,pp=2,tp=1,zero=0,microbatches=2,recompute=none", True),
    ("gpu-2", "dp=1,pp=1,tp=2,zero=0,microbatches=1,recompute=none", True),
    ("gpu-2", "dp=2,pp=1,tp=1,zero=0,microbatches=1,recompute=selective", True),
    ("gpu-4", "dp=1,pp=2,tp=2,zero=0,microbatches=2,recompute=full", True),
    ("gpu-4", "dp=1,pp=4,tp=1,zero=0,microbatches=4,recompute=none,schedule=gpipe", False),
    ("gpu-4", "dp=2,pp=1,tp=2,zero=2,microbatches=1,recompute=none", False),
]

with tempfile.TemporaryDirectory() as tmp:
    r, base, base_dir = train(tmp, "gpu1", "gpu-1", "dp=1,pp=1,tp=1,zero=0,microbatches=1,recompute=none",
                              save=True)
    check(r.returncode == 0, f"gpu-1 runs: {r.stderr[-2000:]}")
    check("vacc_sim CPU simulator" in r.stdout + r.stderr, "the log names the simulated GPU")
    # One GPU replays the layer passes as graphs without being asked.
    check_graphs("gpu-1 by default", r.stdout + r.stderr, "CUDA graphs: on (")
    for flavor, parallel, save in SPLITS:
        graphs = GRAPHS.get(parallel)
        r, got, folder = train(tmp, f"{flavor}-{len(parallel)}-{hash(parallel) & 0xffff}", flavor,
                               parallel, save=save, extra=["--cuda-graphs"] if graphs else [])
        log = r.stdout + r.stderr
        check(r.returncode == 0, f"{flavor} {parallel}: runs: {log[-2500:]}")
        if graphs:
            check_graphs(f"{flavor} {parallel}", log, graphs)
        if r.returncode == 0:
            check("Establishing links between the ranks (nccl)" in log,
                  f"{flavor} {parallel}: the ranks talk over NCCL")
        compare(f"{flavor} {parallel}", got, base, 1e-5)
        if folder and got is not None and base is not None:
            # AdamW moves a weight by about lr per step whatever its gradient's size, so where a
            # gradient is near zero the summation order of a split shows (3e-4 seen for tp=2;
            # cpu-2's tp=2 against cpu-1: 9e-5). A missing or misplaced shard differs by the
            # weights' own scale (about 0.09).
            worst, scale = max_abs_difference(read_safetensors(folder), read_safetensors(base_dir))
            check(worst is not None and worst <= WEIGHT_TOLERANCE,
                  f"{flavor} {parallel}: saved weights equal gpu-1's (worst {worst})")

    # The planner's own split on two GPUs.
    r, got, _ = train(tmp, "gpu2-planned", "gpu-2", "")
    check(r.returncode == 0, f"gpu-2 with the planner runs: {r.stderr[-2000:]}")
    print("gpu-2 planned:", [l for l in (r.stdout + r.stderr).splitlines() if "num_stages" in l][-1:])
    compare("gpu-2 planned", got, base, 1e-5)

    # bf16 mixed precision: the tensor-core flash attention and bf16 products on every rank;
    # ZeRO-3 too: each gathered group converted into its bf16 copy on every rank.
    r, base16, _ = train(tmp, "gpu1-bf16", "gpu-1", "dp=1,pp=1,tp=1,zero=0,microbatches=1,recompute=none",
                         dtype="bf16")
    check(r.returncode == 0, f"gpu-1 bf16 runs: {r.stderr[-2000:]}")
    for flavor, parallel in [("gpu-2", "dp=2,pp=1,tp=1,zero=1,microbatches=1,recompute=none"),
                             ("gpu-2", "dp=2,pp=1,tp=1,zero=3,microbatches=2,recompute=none"),
                             ("gpu-4", "dp=1,pp=2,tp=2,zero=0,microbatches=2,recompute=selective")]:
        graphs = GRAPHS_BF16.get(parallel)
        r, got, _ = train(tmp, f"bf16-{flavor}", flavor, parallel, dtype="bf16",
                          extra=["--cuda-graphs"] if graphs else [])
        check(r.returncode == 0, f"bf16 {flavor} {parallel}: runs: {r.stderr[-2500:]}")
        if graphs:
            check_graphs(f"bf16 {flavor} {parallel}", r.stdout + r.stderr, graphs)
        compare(f"bf16 {flavor} {parallel}", got, base16, 2e-3)

    # More GPUs than the machine has: one clear error before any rank starts.
    r, _, _ = train(tmp, "gpu8", "gpu-8", "dp=8,pp=1,tp=1,zero=0,microbatches=1,recompute=none")
    err = r.stderr
    check(r.returncode != 0 and "8" in err and "4" in err and "Traceback" not in err and
          err.count("error") <= 2, f"gpu-8 on 4 simulated GPUs: one clear error: {err[-1500:]}")
    print("gpu-8 on 4 GPUs:", err.strip().splitlines()[-1] if err.strip() else "(no message)")

# `vacc profile --quick` of two simulated GPUs (small shapes in this build): the devices and the
# NCCL links measured, the profile stored under the GPU's model, and `vacc plan` using it.
with tempfile.TemporaryDirectory() as tmp:
    env = dict(ENV, VACC_HOME=tmp)
    r = subprocess.run([VACC, "profile", "--quick", "--flavor", "gpu-2"], capture_output=True, text=True,
                       timeout=600, env=env)
    check(r.returncode == 0, f"vacc profile --flavor gpu-2: {r.stderr[-2500:]}")
    path = os.path.join(tmp, "profiles", "vacc_sim_CPU_simulator.json")
    check(os.path.exists(path), f"the profile is stored under the GPU's model: {os.listdir(tmp)}")
    if os.path.exists(path):
        prof = json.load(open(path))
        link = (prof.get("links") or {}).get("intra_node") or {}
        check(prof.get("devices") == 2 and set(link.get("per_collective", {})) ==
              {"all_reduce", "reduce_scatter", "all_gather", "send_recv"},
              f"two devices and every collective over NCCL measured: {prof.get('devices')}, {link}")
        p = subprocess.run([VACC, "plan", "--model-config", CONFIG, "--flavor", "gpu-2", "--batch", "4",
                            "--seq-len", "32"], capture_output=True, text=True, timeout=300, env=env)
        check(p.returncode == 0 and "Using the measured profile vacc_sim_CPU_simulator" in p.stderr,
              f"vacc plan uses the stored profile: {p.stderr[-1500:]}")

# The one-GPU commands on gpu-1 against the CPU (the same binary): `vacc eval` and greedy
# `vacc generate` on the tiny preset (the real Qwen tokenizer, from scripts/setup.sh).
with tempfile.TemporaryDirectory() as tmp:
    model = os.path.join(tmp, "tiny")
    r = subprocess.run([VACC, "init", "--preset", "tiny", "--seed", "3", model], capture_output=True,
                       text=True, timeout=300, env=ENV)
    check(r.returncode == 0, f"vacc init --preset tiny (scripts/setup.sh fetches the tokenizer): {r.stderr}")
    data = os.path.join(tmp, "eval.jsonl")
    with open(os.path.join(os.path.dirname(CONFIG), "..", "examples", "data", "instructions.jsonl")) as f:
        lines = f.readlines()[:4]
    with open(data, "w") as f:
        f.writelines(lines)
    out = {}
    for flavor in ("gpu-1", "cpu-1"):
        e = subprocess.run([VACC, "eval", "--model", model, "--data", data, "--seq-len", "48", "--batch", "2",
                            "--json", "--flavor", flavor], capture_output=True, text=True, timeout=300, env=ENV)
        g = subprocess.run([VACC, "generate", "--model", model, "--prompt", "The capital of France is",
                            "--max-new-tokens", "6", "--temperature", "0", "--flavor", flavor],
                           capture_output=True, text=True, timeout=300, env=ENV)
        # Sampling, drawn on the device by the CPU's rule (Backend::sample_rows) from the same seed.
        s = subprocess.run([VACC, "generate", "--model", model, "--prompt", "The capital of France is",
                            "--max-new-tokens", "8", "--temperature", "0.8", "--top-p", "0.9", "--seed", "5",
                            "--flavor", flavor], capture_output=True, text=True, timeout=300, env=ENV)
        check(e.returncode == 0 and g.returncode == 0 and s.returncode == 0,
              f"eval and generate on {flavor}: {e.stderr[-800:]} {g.stderr[-800:]} {s.stderr[-800:]}")
        if e.returncode == 0 and g.returncode == 0 and s.returncode == 0:
            out[flavor] = (json.loads(e.stdout.strip().splitlines()[-1]), g.stdout, s.stdout)
    if len(out) == 2:
        (eg, gg, sg), (ec, gc, sc) = out["gpu-1"], out["cpu-1"]
        # The weights of the two backends may differ by an ulp of exp, which moves a draw only
        # where its point falls within that ulp's share of the mass.
        check(sg == sc and sg.strip(), f"sampled vacc generate on gpu-1 gives the CPU's text: {sg!r} vs {sc!r}")
        check(eg["tokens"] == ec["tokens"] and abs(eg["loss"] - ec["loss"]) <= 1e-5 * abs(ec["loss"]),
              f"vacc eval on gpu-1 gives the CPU's loss: {eg} vs {ec}")
        check(gg == gc and gg.strip(), f"greedy vacc generate on gpu-1 gives the CPU's text: {gg!r} vs {gc!r}")
        print(f"eval gpu-1 {eg}, cpu-1 {ec}; generate: {gg.strip()!r}; sampled: {sg.strip()!r}")
        # Each new token's pass replayed as a CUDA graph: the same text.
        g = subprocess.run([VACC, "generate", "--model", model, "--prompt", "The capital of France is",
                            "--max-new-tokens", "6", "--temperature", "0", "--flavor", "gpu-1",
                            "--cuda-graphs"], capture_output=True, text=True, timeout=300, env=ENV)
        check(g.returncode == 0 and g.stdout == gc,
              f"greedy vacc generate --cuda-graphs on gpu-1 gives the CPU's text: {g.stdout!r} vs {gc!r} {g.stderr[-800:]}")
        check(re.search(r"CUDA graphs: 1 captured, [1-9]\d* replays", g.stderr) is not None,
              f"generate --cuda-graphs replays a graph: {g.stderr[-500:]}")

    # A fine-tune of it on real records: prompt tokens masked (the classifier's gathered rows),
    # a held-out evaluation after every step, two pipeline stages, saved; gpu-2 (its layer
    # passes replayed as CUDA graphs, the evaluations' forward passes too) against cpu-2.
    runs = {}
    for flavor in ("gpu-2", "cpu-2"):
        metrics, folder = os.path.join(tmp, f"ft-{flavor}.jsonl"), os.path.join(tmp, f"ft-{flavor}")
        r = subprocess.run([VACC, "train", "--model", model, "--data", data, "--mask-prompt",
                            "--eval-fraction", "0.25", "--eval-every", "1", "--steps", "2", "--batch", "2",
                            "--seq-len", "48", "--flavor", flavor, "--parallel",
                            "dp=1,pp=2,tp=1,zero=0,microbatches=2,recompute=none", "--save", folder,
                            "--metrics-out", metrics, "--cuda-graphs"], capture_output=True, text=True,
                           timeout=600, env=ENV)
        check(r.returncode == 0, f"fine-tune on {flavor}: {r.stderr[-2000:]}")
        want = "CUDA graphs: on (" if flavor.startswith("gpu") else "CUDA graphs: off: backend cpu"
        check(want in r.stdout + r.stderr, f"fine-tune on {flavor}: the log says '{want}'")
        if r.returncode == 0:
            rows = [json.loads(line) for line in open(metrics)]
            runs[flavor] = ([x["loss"] for x in rows if "loss" in x],
                            [x["eval_loss"] for x in rows if "eval_loss" in x], folder)
    if len(runs) == 2:
        (lg, eg, fg), (lc, ec, fc) = runs["gpu-2"], runs["cpu-2"]
        check(len(eg) == 2, f"an evaluation after each step: {eg}")
        compare("fine-tune gpu-2 pp=2 (train)", lg, lc, 1e-5)
        check(len(eg) == len(ec) and all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(eg, ec)),
              f"fine-tune gpu-2 pp=2: evaluation losses {eg} equal cpu-2's {ec}")
        worst, _ = max_abs_difference(read_safetensors(fg), read_safetensors(fc))
        check(worst is not None and worst <= WEIGHT_TOLERANCE, f"fine-tune: saved weights equal cpu-2's ({worst})")

finish("gpu_sim_parallel")
