#!/usr/bin/python3
"""Training-step benchmark: vacc (f32 and bf16 mixed precision) against PyTorch (f32) on the
same model, batch and sequence length, in one run on one machine. Prints each throughput,
the model FLOP rate, and the ratios.

  bench/train_vs_pytorch.py [--steps 5] [--vacc build/bin/vacc] [--config configs/bench-qwen2-40m.json]

PyTorch runs with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (these machines set them, and
they slow the OpenBLAS PyTorch uses for f32); vacc runs with the environment as it is."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def flops_per_token(c, seq):
    h, f, L, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    d = c.get("head_dim", h // c["num_attention_heads"])
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    bias = (q + 2 * kv) if c.get("model_type") == "qwen2" else 0
    layer = h * q + 2 * h * kv + q * h + bias + 3 * h * f + 2 * h
    n = L * layer + v * h
    return 6 * n + 12 * L * h * seq


def run_vacc(vacc, config, dtype, batch, seq, steps, threads):
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.jsonl")
        cmd = [vacc, "train", "--model-config", config, "--synthetic", "--batch", str(batch),
               "--seq-len", str(seq), "--steps", str(steps), "--dtype", dtype,
               "--metrics-out", metrics, "--threads", str(threads), "--flavor", "cpu-1",
               # One device, no micro-batches, no recomputation: the step PyTorch runs.
               "--parallel", "dp=1,pp=1,tp=1,zero=0,microbatches=1,recompute=none"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"vacc failed: {out.stderr}")
        peak = [l for l in out.stdout.splitlines() if l.startswith("Measured peak")]
        rows = [json.loads(l) for l in open(metrics)]
    timed = rows[1:] if len(rows) > 1 else rows
    tps = sum(r["tokens"] for r in timed) / sum(r["step_time_s"] for r in timed)
    return tps, (peak[0] if peak else ""), [r["loss"] for r in rows]


def run_pytorch(config, batch, seq, steps, threads):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    cmd = ["/usr/bin/python3", os.path.join(HERE, "pytorch_train.py"), "--config", config,
           "--batch", str(batch), "--seq-len", str(seq), "--steps", str(steps),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"pytorch failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vacc", default=os.path.join(ROOT, "build", "bin", "vacc"))
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "bench-qwen2-40m.json"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    c = json.load(open(args.config))
    fpt = flops_per_token(c, args.seq_len)

    pt = run_pytorch(args.config, args.batch, args.seq_len, args.steps, args.threads)
    f32, f32_peak, _ = run_vacc(args.vacc, args.config, "f32", args.batch, args.seq_len, args.steps, args.threads)
    bf16, bf16_peak, _ = run_vacc(args.vacc, args.config, "bf16", args.batch, args.seq_len, args.steps, args.threads)

    print(f"model {os.path.basename(args.config)}: {fpt / 1e6:.1f} MFLOP per token (6N + 12 L h s), "
          f"batch {args.batch} x {args.seq_len}, {args.threads} threads, {args.steps} steps (first not timed)")
    print(f"PyTorch {pt['torch']} f32      : {pt['tokens_per_sec']:9.1f} tokens/s  {pt['tokens_per_sec'] * fpt / 1e9:7.1f} GFLOP/s")
    print(f"vacc f32                 : {f32:9.1f} tokens/s  {f32 * fpt / 1e9:7.1f} GFLOP/s   {f32 / pt['tokens_per_sec']:.2f}x PyTorch   [{f32_peak}]")
    print(f"vacc bf16 mixed precision: {bf16:9.1f} tokens/s  {bf16 * fpt / 1e9:7.1f} GFLOP/s   {bf16 / pt['tokens_per_sec']:.2f}x PyTorch f32   [{bf16_peak}]")


if __name__ == "__main__":
    main()
