#!/usr/bin/env python3
"""`vacc profile` end to end in a temporary VACC_HOME: `vacc profile --quick --flavor cpu-2`
(two ranks measuring at once) writes $VACC_HOME/profiles/cpu-2.json with plausible figures;
`vacc plan --flavor cpu-2` then says it uses it and plans with its figures (a faster stored
peak gives faster predictions, a slower stored link slower tensor parallelism); a corrupt
profile is one error naming the file; a GPU or unknown flavor is a clear error.
Usage: cli_profile_test.py VACC MODEL_CONFIG.json"""
import json
import os
import subprocess
import sys
import tempfile
import time

VACC, CONFIG = sys.argv[1], sys.argv[2]
from e2e_checks import check, finish  # noqa: E402


with tempfile.TemporaryDirectory() as home:
    env = dict(os.environ, VACC_HOME=home)

    def vacc(*args, timeout=120):
        return subprocess.run([VACC, *args], capture_output=True, text=True, env=env, timeout=timeout)

    start = time.time()
    r = vacc("profile", "--quick", "--flavor", "cpu-2")
    took = time.time() - start
    print(r.stdout[-3000:], r.stderr[-2000:], sep="\n", flush=True)
    check(r.returncode == 0, f"vacc profile failed ({r.returncode}): {r.stderr[-2000:]}")
    # How long --quick takes is a figure, not a check (the machine may be loaded).
    print(f"vacc profile --quick --flavor cpu-2 took {took:.1f} s")
    path = os.path.join(home, "profiles", "cpu-2.json")
    check(os.path.exists(path), f"{path} was not written")
    check("[1/" in r.stderr + r.stdout, "no progress lines")
    check("Saved to " + path in r.stdout, "the summary does not say where the profile went")
    prof = json.load(open(path))
    check(prof["schema"] == "vacc-profile/1" and prof["flavor"] == "cpu-2" and prof["devices"] == 2,
          f"header: {[prof.get(k) for k in ('schema', 'flavor', 'devices')]}")
    check(prof["threads_per_device"] >= 1 and prof["host"] and prof["measured_at"].endswith("Z"),
          "threads/host/date missing")
    dev = prof["device"]["profile"]
    peak = dev["peak_fp32_tflops"] * 1e3  # GFLOP/s
    check(0.5 < peak < 5000, f"implausible matmul peak {peak} GFLOP/s")
    check(dev["half_work"] >= 1 and dev["peak_efficiency"] == 1, "curve fields")
    for key in ("memory_bandwidth_gbytes_per_s", "elementwise_bandwidth_gbytes_per_s",
                "optimizer_bandwidth_gbytes_per_s"):
        check(0.1 < dev[key] < 1000, f"implausible {key} {dev[key]}")
    check(0.1 < dev.get("attention_factor", 1) < 100, "implausible attention factor")
    check(dev.get("overlaps_communication") is False,
          "a CPU profile must say its ranks do not overlap communication with compute")
    check(len(prof["device"]["matmul"]) >= 6 and all(m["gflops"] > 0 for m in prof["device"]["matmul"]),
          "matmul samples")
    names = {k["name"] for k in prof["device"]["kernels"]}
    check(names >= {"stream_add", "rmsnorm_forward", "swiglu_forward", "adamw", "attention"},
          f"kernels measured: {names}")
    link = prof["links"]["intra_node"]
    check(set(link["per_collective"]) == {"all_reduce", "reduce_scatter", "all_gather", "send_recv"},
          f"per-collective link figures: {link.get('per_collective')}")
    check(0.01 < link["bandwidth_gbytes_per_s"] < 1000, f"implausible link bandwidth {link}")
    check(0 <= link["latency_us"] < 10000, f"implausible link latency {link}")
    sync = link["sync"]
    check(len(sync) == 3 and all(p["ranks"] == 2 and p["sync_us"] >= 0 for p in sync)
          and sorted(p["compute_us"] for p in sync) == [p["compute_us"] for p in sync]
          and sync[0]["compute_us"] > 0 and link["sync_us"] == sync[-1]["sync_us"],
          f"synchronisation by group size and compute: {sync}")
    ops = {(c["op"], c["ranks"]) for c in prof["links"]["collectives"]}
    check(ops == {("all_reduce", 2), ("reduce_scatter", 2), ("all_gather", 2), ("send_recv", 2)},
          f"collectives measured: {ops}")
    check(all(len(c["points"]) >= 4 and all(p["seconds"] > 0 for p in c["points"])
              for c in prof["links"]["collectives"]), "collective points")

    # vacc plan uses it: says so, and plans with its figures.
    plan = ["plan", "--model-config", CONFIG, "--flavor", "cpu-2", "--batch", "8", "--seq-len", "256",
            "--json"]
    r = vacc(*plan)
    check(r.returncode == 0, f"vacc plan failed: {r.stderr}")
    check(f"Using the measured profile cpu-2 from {path} (measured {prof['measured_at']})" in r.stderr,
          f"plan does not say it uses the profile: {r.stderr}")
    check("Measured peak per device" not in r.stderr, "plan measured the peak although a profile is stored")
    used = json.loads(r.stdout)["device_profile"]
    check(abs(used["peak_fp32_tflops"] - dev["peak_fp32_tflops"]) < 1e-9 * dev["peak_fp32_tflops"]
          and abs(used["memory_bandwidth_gbytes_per_s"] - dev["memory_bandwidth_gbytes_per_s"]) < 1e-6,
          f"the plan's device profile is not the stored one: {used}")

    def step(parallel):
        r = vacc(*plan, "--parallel", parallel)
        check(r.returncode == 0, f"plan --parallel {parallel} failed: {r.stderr}")
        return json.loads(r.stdout)["chosen"]["predicted_step_time_s"]

    dp = "dp=2,pp=1,tp=1,microbatches=1,recompute=none,zero=0"
    tp = "dp=1,pp=1,tp=2,microbatches=1,recompute=none,zero=0"
    base_dp, base_tp = step(dp), step(tp)
    edited = json.loads(json.dumps(prof))
    edited["device"]["profile"]["peak_fp32_tflops"] *= 4
    edited["device"]["profile"]["peak_bf16_tflops"] *= 4
    json.dump(edited, open(path, "w"))
    check(step(dp) < 0.6 * base_dp, "a 4x faster stored peak does not make the plan faster")
    edited = json.loads(json.dumps(prof))
    edited["links"]["intra_node"]["bandwidth_gbytes_per_s"] /= 100
    for per in edited["links"]["intra_node"]["per_collective"].values():
        per["bandwidth_gbytes_per_s"] /= 100
    json.dump(edited, open(path, "w"))
    check(step(tp) > 1.2 * base_tp, "a 100x slower stored link does not slow tensor parallelism")

    # --device-peak-tflops rescales the stored CPU profile to that peak (the machine's speed
    # now), keeping the curve's shape and the links.
    r = vacc(*plan, "--device-peak-tflops", "1")
    check(r.returncode == 0 and json.loads(r.stdout)["device_profile"]["peak_fp32_tflops"] > 0.99,
          "--device-peak-tflops does not set the stored profile's peak")
    check("scaled to the peak of --device-peak-tflops: 1000.0 GFLOP/s" in r.stderr, f"stderr: {r.stderr}")

    # A corrupt profile: one clear error naming the file.
    with open(path, "w") as f:
        f.write('{"schema": "vacc-profile/1", "device": ')
    r = vacc(*plan)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    check(r.returncode == 1 and len(lines) == 1 and path in lines[0] and "vacc profile" in lines[0],
          f"corrupt profile: {r.stderr}")
    json.dump({k: v for k, v in prof.items() if k != "device"}, open(path, "w"))
    r = vacc(*plan)
    check(r.returncode == 1 and path in r.stderr and '"device"' in r.stderr,
          f"profile without device: {r.stderr}")

    # --out writes elsewhere (in bf16: its classifier keeps an f32 dx, as training does); bad
    # flavors are clear errors.
    os.remove(path)
    out = os.path.join(home, "one.json")
    r = vacc("profile", "--quick", "--flavor", "cpu-1", "--dtype", "bf16", "--out", out)
    check(r.returncode == 0 and os.path.exists(out) and json.load(open(out))["links"] is None,
          f"--out on cpu-1 in bf16: {r.stderr[-1000:]}")
    check(not os.path.exists(os.path.join(home, "profiles", "cpu-1.json")), "--out also wrote the database")
    if not os.path.exists("/dev/nvidia0"):
        # GPU flavors are measured on their GPUs; without one, one line says why.
        r = vacc("profile", "--flavor", "gpu-2")
        check(r.returncode == 1 and "gpu-2" in r.stderr and r.stderr.count("\n") <= 2,
              f"gpu flavor without a GPU: {r.stderr}")
    r = vacc("profile", "--flavor", "cpu-x")
    check(r.returncode == 1 and "cpu-x" in r.stderr, f"unknown flavor: {r.stderr}")
    r = vacc("profile", "--flavor", "cpu-1", "--dtype", "f16")
    check(r.returncode == 1 and "--dtype" in r.stderr, f"bad dtype: {r.stderr}")

finish("cli_profile")
