#!/usr/bin/env python3
"""The fine-tune step on one GPU: vacc (`vacc train --flavor gpu-1`, bf16 mixed precision with
f32 master weights) against Hugging Face transformers' Qwen2ForCausalLM on the same model shape,
batch and sequence length, eager and under torch.compile, in one run on one GPU.

  bench/gpu_step_vs_transformers.py --vacc build-gpu/bin/vacc [--preset qwen2.5-0.5b]
      [--batch 8] [--seq-len 1024] [--steps 10] [--skip-compile] [--json OUT.json]

The peer runs what `vacc train --dtype bf16` runs: f32 weights, bf16 autocast for the
products and attention (SDPA), AdamW (fused) with f32 states, global-norm clipping at 1.0.
Both draw their weights at random (same shape, not the same values) and train on random
tokens. Every step is timed to the end of the optimizer update (synchronized); the first
steps (one-time set-up, compilation) are left out and the median of the others is reported.

MFU counts 6 x parameters + 12 x layers x hidden x sequence FLOPs per token (the PaLM
formula, the one `vacc train` logs), over the bf16 matrix-product peak measured here (an
8192^3 product through PyTorch, median of 10) and over the datasheet's dense bf16 peak."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_vs_pytorch import flops_per_token  # noqa: E402

DATASHEET_BF16_DENSE = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}


def datasheet_peak(name):
    for key, value in DATASHEET_BF16_DENSE.items():
        if key in name:
            return value
    return 0.0


def measured_bf16_peak(torch):
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2.0 * n**3 / statistics.median(times)


def run_vacc(vacc, model_dir, batch, seq, steps, extra):
    with tempfile.TemporaryDirectory() as tmp:
        metrics, plan = os.path.join(tmp, "m.jsonl"), os.path.join(tmp, "plan.json")
        cmd = [vacc, "train", "--model-config", os.path.join(model_dir, "config.json"),
               "--synthetic", "--batch", str(batch), "--seq-len", str(seq), "--steps", str(steps),
               "--dtype", "bf16", "--flavor", "gpu-1", "--metrics-out", metrics,
               "--plan-out", plan] + extra
        print("$ " + " ".join(cmd), flush=True)
        t0 = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(out.stdout[-6000:])
        sys.stdout.write(out.stderr[-6000:])
        if out.returncode != 0:
            raise SystemExit(f"vacc train failed ({out.returncode})")
        rows = [json.loads(line) for line in open(metrics)]
        print(f"  (vacc train took {time.time() - t0:.1f} s in all)", flush=True)
        # The memory model's prediction, when the planner ran (no --parallel pinning it all).
        predicted = (json.load(open(plan))["predicted_peak_memory_bytes"]
                     if os.path.exists(plan) else None)
    times = [r["step_time_s"] for r in rows[2:]] or [r["step_time_s"] for r in rows]
    memory = {"peak_bytes": max(max(r["peak_memory_bytes"]) for r in rows),
              "predicted_peak_bytes": predicted}
    return statistics.median(times), [r["loss"] for r in rows], memory


def run_transformers(torch, transformers, model_dir, batch, seq, steps, compile_model):
    torch.manual_seed(0)
    config = transformers.AutoConfig.from_pretrained(model_dir)
    config._attn_implementation = "sdpa"
    model = transformers.Qwen2ForCausalLM(config).to(device="cuda", dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0, fused=True)
    forward = torch.compile(model) if compile_model else model
    gen = torch.Generator(device="cuda").manual_seed(1)
    torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(steps):
        ids = torch.randint(0, config.vocab_size, (batch, seq), device="cuda", generator=gen)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    memory = {"peak_bytes": torch.cuda.max_memory_allocated()}
    del model, opt, forward
    torch.cuda.empty_cache()
    warm = 3 if compile_model else 2
    return statistics.median(times[warm:]), losses, memory


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vacc", default=os.path.join(os.path.dirname(HERE), "build", "bin", "vacc"))
    p.add_argument("--preset", default="qwen2.5-0.5b")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--skip-vacc", action="store_true")
    p.add_argument("--vacc-args", default="", help="extra arguments for vacc train")
    p.add_argument("--graphs", action="store_true",
                   help="also run vacc train --no-cuda-graphs (every op launched; one GPU's "
                        "default replays the layer passes as graphs)")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()

    import torch
    import transformers

    name = torch.cuda.get_device_name(0)
    peak = measured_bf16_peak(torch)
    sheet = datasheet_peak(name)
    print(f"GPU: {name}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"bf16 peak measured {peak / 1e12:.0f} TFLOP/s, datasheet {sheet / 1e12:.0f}", flush=True)

    with tempfile.TemporaryDirectory() as model_dir:
        subprocess.run([a.vacc, "init", "--preset", a.preset, "--config-only", model_dir],
                       check=True, capture_output=True)
        config = json.load(open(os.path.join(model_dir, "config.json")))
        fpt = flops_per_token(config, a.seq_len)
        tokens = a.batch * a.seq_len
        results = {}
        if not a.skip_vacc:
            results["vacc"] = run_vacc(a.vacc, model_dir, a.batch, a.seq_len, a.steps,
                                       a.vacc_args.split())
            if a.graphs:
                results["vacc --no-cuda-graphs"] = run_vacc(
                    a.vacc, model_dir, a.batch, a.seq_len, a.steps,
                    a.vacc_args.split() + ["--no-cuda-graphs"])
        results["transformers eager"] = run_transformers(torch, transformers, model_dir, a.batch,
                                                         a.seq_len, a.steps, False)
        if not a.skip_compile:
            results["transformers torch.compile"] = run_transformers(
                torch, transformers, model_dir, a.batch, a.seq_len, a.steps, True)

    print(f"\n{a.preset}, bf16 mixed precision, batch {a.batch} x {a.seq_len} tokens, "
          f"{fpt / 1e9:.2f} GFLOP per token, on {name}")
    print(f"{'':28} {'step ms':>8} {'tokens/s':>9} {'MFU(meas)':>9} {'MFU(sheet)':>10} {'peak GiB':>8}"
          f"  losses")
    figures = {"gpu": name, "torch": torch.__version__, "transformers": transformers.__version__,
               "measured_peak": peak, "datasheet_peak": sheet, "batch": a.batch,
               "seq_len": a.seq_len, "preset": a.preset, "runs": {}}
    for label, (seconds, losses, memory) in results.items():
        tps = tokens / seconds
        mfu, mfu_sheet = tps * fpt / peak, (tps * fpt / sheet if sheet else 0)
        print(f"{label:28} {seconds * 1e3:8.1f} {tps:9.0f} {100 * mfu:8.1f}% {100 * mfu_sheet:9.1f}%"
              f" {memory['peak_bytes'] / 2**30:8.2f}  {losses[0]:.3f} -> {losses[-1]:.3f}")
        figures["runs"][label] = {"step_s": seconds, "tokens_per_s": tps, "mfu_measured": mfu,
                                  "mfu_datasheet": mfu_sheet, "losses": losses, "memory": memory}
    if results.get("vacc") and results["vacc"][2]["predicted_peak_bytes"]:
        m = results["vacc"][2]
        print(f"vacc memory: measured peak {m['peak_bytes'] / 2**30:.2f} GiB, the memory model "
              f"predicted {m['predicted_peak_bytes'] / 2**30:.2f} GiB "
              f"({100 * (m['predicted_peak_bytes'] / m['peak_bytes'] - 1):+.1f}%)")
    for mine in ("vacc", "vacc --no-cuda-graphs"):
        if mine in results:
            for label in results:
                if not label.startswith("vacc"):
                    print(f"{mine} / {label}: {results[label][0] / results[mine][0]:.2f}x throughput")
    if "vacc --no-cuda-graphs" in results:
        print(f"vacc / vacc --no-cuda-graphs: "
              f"{results['vacc --no-cuda-graphs'][0] / results['vacc'][0]:.3f}x throughput")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
