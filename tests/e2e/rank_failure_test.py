#!/usr/bin/python3
"""Faults in a job of several ranks, and `vacc status` of a running job:
- while a cpu-2 job runs, `vacc status` shows it (PID, flavor, step, both devices);
- kill -9 of one rank mid-run ends the whole job within 30 s, with a message naming the rank
  and its host, leaves no process behind, and the last checkpoint stays loadable;
- a rank that hangs (SIGSTOP) makes the others time out (--comm-timeout) and ends the job
  within 30 s, again with nothing left behind."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

VACC = sys.argv[1]
from e2e_checks import check, finish  # noqa: E402


CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 512,
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "initializer_range": 0.02,
    "tie_word_embeddings": True, "hidden_act": "silu", "torch_dtype": "float32",
}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not a leftover: it has exited and waits for its parent.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Job:
    """A `vacc train` on cpu-2 whose output is read as it comes."""

    def __init__(self, tmp, name, extra):
        self.out = []
        self.save = os.path.join(tmp, name)
        env = dict(os.environ, VACC_HOME=os.path.join(tmp, "home"))
        self.env = env
        self.proc = subprocess.Popen(
            [VACC, "train", "--model-config", os.path.join(tmp, "config.json"), "--synthetic",
             "--batch", "4", "--seq-len", "64", "--steps", "100000", "--flavor", "cpu-2",
             "--save", self.save, "--save-every", "3"] + extra,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.out.append(line)

    def text(self):
        return "".join(self.out)

    def wait_for(self, pattern, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        return None

    def rank_pids(self):
        return {int(r): int(p) for r, p in
                re.findall(r"Connecting to rank (\d+) on \S+ \(pid (\d+)\)", self.text())}


def run_fault(tmp, name, fault, extra):
    job = Job(tmp, name, extra)
    ok = job.wait_for(r"\[Step 7/") is not None
    check(ok, f"{name}: the job reaches step 7:\n{job.text()[-3000:]}")
    if not ok:
        job.proc.kill()
        return
    pids = job.rank_pids()
    check(len(pids) == 2, f"{name}: the log names both ranks' PIDs: {pids}")
    if name == "kill":  # `vacc status` sees the running job
        st = subprocess.run([VACC, "status"], capture_output=True, text=True, env=job.env, timeout=30)
        check(f"PID {job.proc.pid}" in st.stdout and "running" in st.stdout and "cpu-2" in st.stdout,
              f"vacc status shows the running job (launcher PID {job.proc.pid}):\n{st.stdout}")
        check(len(re.findall(r"^\s+\[\d\] CPU on ", st.stdout, re.M)) == 2,
              f"vacc status lists the job's two devices:\n{st.stdout}")
    t0 = time.time()
    os.kill(pids[1], fault)
    try:
        code = job.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None
        job.proc.kill()
    elapsed = time.time() - t0
    time.sleep(0.5)
    text = job.text()
    check(code not in (None, 0), f"{name}: the job fails (exit {code})")
    check(elapsed <= 30, f"{name}: the job ended {elapsed:.1f} s after the fault (limit 30 s)")
    check(re.search(r"vacc: error: .*rank", text) is not None,
          f"{name}: one error line names a rank:\n{text[-3000:]}")
    if fault == signal.SIGKILL:
        check(re.search(r"rank 1 \(pid \d+\) on host \S+ died: killed by signal 9", text) is not None,
              f"{name}: the message names rank 1, its host and the signal:\n{text[-3000:]}")
    else:
        check("timed out" in text, f"{name}: the message says the others timed out:\n{text[-3000:]}")
    left = [p for p in pids.values() if alive(p)]
    check(not left, f"{name}: no rank left behind (alive: {left})")
    # The last complete checkpoint is intact: it loads and trains.
    ckpts = sorted((int(d.split("-")[1]), d) for d in os.listdir(job.save) if d.startswith("checkpoint-"))
    check(ckpts, f"{name}: at least one checkpoint was written")
    if ckpts:
        last = os.path.join(job.save, ckpts[-1][1])
        ev = subprocess.run([VACC, "train", "--model", last, "--synthetic", "--batch", "2",
                             "--seq-len", "32", "--steps", "1", "--flavor", "cpu-1"],
                            capture_output=True, text=True, timeout=120)
        check(ev.returncode == 0, f"{name}: the last checkpoint {last} loads: {ev.stderr}")
    print(f"{name}: ended {elapsed:.1f} s after the fault, exit {code}", flush=True)
    st = subprocess.run([VACC, "status"], capture_output=True, text=True, env=job.env, timeout=30)
    check("dead" in st.stdout or "none running" in st.stdout,
          f"{name}: vacc status no longer reports a running job:\n{st.stdout}")
    subprocess.run([VACC, "status", "--reset"], capture_output=True, text=True, env=job.env, timeout=30)


with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    run_fault(tmp, "kill", signal.SIGKILL, [])
    run_fault(tmp, "hang", signal.SIGSTOP, ["--comm-timeout", "5"])

finish("rank_failure")
