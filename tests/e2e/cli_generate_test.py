#!/usr/bin/python3
"""`vacc generate` end to end on the tiny preset (real Qwen tokenizer): greedy output is
deterministic, sampling repeats with a seed, --chat and --alpaca wrap the prompt, and the
number of new tokens respects --max-new-tokens.

usage: cli_generate_test.py VACC"""
import os
import subprocess
import sys
import tempfile

VACC = sys.argv[1]
from e2e_checks import check, finish  # noqa: E402


def run(*args):
    return subprocess.run([VACC, *args], capture_output=True, text=True, timeout=300)


with tempfile.TemporaryDirectory() as tmp:
    model = os.path.join(tmp, "tiny")
    r = run("init", "--preset", "tiny", "--seed", "3", model)
    if r.returncode != 0:
        sys.exit(f"vacc init --preset tiny failed (run scripts/setup.sh to fetch the tokenizer): {r.stderr}")
    base = ["generate", "--model", model, "--prompt", "The capital of France is", "--max-new-tokens", "8"]
    a, b = run(*base, "--temperature", "0"), run(*base, "--temperature", "0")
    check(a.returncode == 0, f"greedy generation exits 0: {a.stderr}")
    check(a.stdout == b.stdout and a.stdout.strip() != "", f"greedy output repeats: {a.stdout!r} vs {b.stdout!r}")
    s1, s2 = run(*base, "--seed", "5", "--temperature", "1.0"), run(*base, "--seed", "5", "--temperature", "1.0")
    check(s1.returncode == 0 and s1.stdout == s2.stdout, "sampling with a seed repeats")
    for flag in ("--chat", "--alpaca"):
        r = run(*base, flag, "--temperature", "0")
        check(r.returncode == 0, f"{flag} works: {r.stderr}")
    # Each new token is at least one character of output here (a random model rarely emits
    # an empty piece); 8 tokens cannot make more than 8 tokens' worth of ids.
    ids = subprocess.run([VACC, "tokenize", "--tokenizer", model], input=a.stdout.rstrip("\n"),
                         capture_output=True, text=True, timeout=120)
    check(ids.returncode == 0 and 0 < len(ids.stdout.split()) <= 16,
          f"the output re-tokenizes to a handful of ids: {ids.stdout!r}")
    r = run("generate", "--model", model, "--prompt", "")
    check(r.returncode == 1 and "empty" in r.stderr, f"an empty prompt is one clear error: {r.stderr!r}")

finish("cli_generate")
