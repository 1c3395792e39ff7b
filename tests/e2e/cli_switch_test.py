#!/usr/bin/python3
"""`vacc switch` and `vacc status` end to end in a temporary VACC_HOME: switch by name and by
number on stdin, a bad name is one line and exit 1, status shows the flavor and its devices,
a status file naming a dead PID is reported and `vacc status --reset` clears it.

usage: cli_switch_test.py VACC"""
import json
import os
import subprocess
import sys
import tempfile

VACC = sys.argv[1]
from e2e_checks import check, finish  # noqa: E402


with tempfile.TemporaryDirectory() as tmp:
    home = os.path.join(tmp, "vacc-home")
    env = dict(os.environ, VACC_HOME=home)

    def run(*args, stdin=""):
        return subprocess.run([VACC, *args], input=stdin, capture_output=True, text=True,
                              timeout=60, env=env)

    r = run("status")
    check(r.returncode == 0 and "cpu-1" in r.stdout, f"fresh status shows cpu-1: {r.stdout} {r.stderr}")

    r = run("switch", "cpu-4x2g")
    check(r.returncode == 0, f"switch cpu-4x2g exits 0: {r.stderr}")
    check("Accelerator switched to cpu-4x2g: 4 CPU devices" in r.stdout, f"switch announces: {r.stdout}")
    with open(os.path.join(home, "flavor")) as f:
        check(f.read().strip() == "cpu-4x2g", "the choice is remembered in $VACC_HOME/flavor")
    r = run("status")
    check(r.returncode == 0 and "cpu-4x2g" in r.stdout, f"status shows the flavor: {r.stdout}")
    check(r.stdout.count("0 B / 2.0 GiB") == 4, f"status lists 4 devices with 2 GiB each: {r.stdout}")
    check("none running" in r.stdout, f"status says no job runs: {r.stdout}")

    r = run("switch", stdin="2\n")
    check(r.returncode == 0, f"switch by number exits 0: {r.stderr}")
    check("1) cpu-1 : 1 CPU device" in r.stdout and "6) gpu-8" in r.stdout, f"numbered list: {r.stdout}")
    check("cpu-4x2g" in r.stdout, f"the list names the current flavor: {r.stdout}")
    check("Accelerator switched to cpu-2" in r.stdout, f"choice 2 is cpu-2: {r.stdout}")
    r = run("switch", stdin="1\n")
    check(r.returncode == 0 and "2) cpu-2 : 2 CPU devices, " in r.stdout, f"list shown again: {r.stdout}")
    check([l for l in r.stdout.splitlines() if "2) cpu-2" in l][0].rstrip().endswith("*"),
          f"the current flavor is marked: {r.stdout}")

    for args, stdin, what in ((("switch", "tpu-9"), "", "bad name"),
                              (("switch",), "", "empty stdin"),
                              (("switch",), "abc\n", "not a number"),
                              (("switch",), "7\n", "out of range"),
                              (("switch", "--flavor-file", os.path.join(tmp, "none.json")), "", "missing file")):
        r = run(*args, stdin=stdin)
        lines = r.stderr.strip().splitlines()
        check(r.returncode == 1 and len(lines) == 1 and lines[0].startswith("vacc: error:"),
              f"{what}: exit 1 with one error line (rc={r.returncode}, stderr={r.stderr!r})")
    check("cpu-NxSIZE" in run("switch", "tpu-9").stderr, "a bad name lists the valid forms")
    r = run("status")
    check("cpu-1" in r.stdout, f"failed switches keep the flavor: {r.stdout}")

    if not os.path.exists("/dev/nvidia0"):
        # A GPU flavor on a machine without one: status says why each device cannot be used.
        r = run("switch", "gpu-2")
        check(r.returncode == 0 and "Note: jobs on it cannot start here: " in r.stdout,
              f"switching to gpu-2 without GPUs says at once that jobs cannot start: {r.stdout}")
        r = run("status")
        check(r.returncode == 0 and r.stdout.count("cannot be used here (") == 2,
              f"status of gpu-2 without GPUs: {r.stdout} {r.stderr}")
        run("switch", "cpu-1")

    # A flavor file.
    flavor_file = os.path.join(tmp, "cluster.json")
    with open(flavor_file, "w") as f:
        json.dump({"name": "a100-x16", "device": {"model": "A100-80GB", "memory_gib": 80},
                   "devices_per_node": 8, "nodes": 2,
                   "links": {"intra_node": {"bandwidth_gbytes_per_s": 300, "latency_us": 3},
                             "inter_node": {"bandwidth_gbytes_per_s": 25, "latency_us": 5}},
                   "launcher": {"kind": "slurm", "partition": "gpu"}}, f)
    r = run("switch", "--flavor-file", flavor_file)
    check(r.returncode == 0 and "Accelerator switched to a100-x16: 16 A100-80GB devices" in r.stdout,
          f"switch --flavor-file: {r.stdout} {r.stderr}")
    r = run("status")
    check("a100-x16" in r.stdout and r.stdout.count("/ 80.0 GiB") == 16, f"status of the file flavor: {r.stdout}")
    run("switch", "cpu-2")

    # A job that died and left its status behind.
    dead = subprocess.Popen(["/bin/true"])
    dead.wait()
    status = {"pid": dead.pid, "command": "vacc train --steps 20", "started": "2025-01-01T10:00:00",
              "flavor": "cpu-2", "step": 4, "total_steps": 20,
              "devices": [{"rank": 0, "host": "h", "memory_used": 1048576, "memory_total": 2097152},
                          {"rank": 1, "host": "h", "memory_used": 1048576, "memory_total": 2097152}]}
    with open(os.path.join(home, "status.json"), "w") as f:
        json.dump(status, f)
    r = run("status")
    check(r.returncode == 0 and f"PID {dead.pid}" in r.stdout and "dead" in r.stdout,
          f"status reports the dead PID: {r.stdout} {r.stderr}")
    check("vacc status --reset" in r.stdout, f"status suggests --reset: {r.stdout}")
    r = run("status", "--reset")
    check(r.returncode == 0 and not os.path.exists(os.path.join(home, "status.json")),
          f"--reset clears the status file: {r.stdout} {r.stderr}")
    check("none running" in run("status").stdout, "after --reset no job is shown")

    # A live job (this test's own PID) shows its devices' memory.
    status["pid"] = os.getpid()
    with open(os.path.join(home, "status.json"), "w") as f:
        json.dump(status, f)
    r = run("status")
    check(f"running, PID {os.getpid()}" in r.stdout and r.stdout.count("1.0 MiB / 2.0 MiB") == 2,
          f"status shows the running job and its memory: {r.stdout}")
    r = run("status", "--reset")
    check(r.returncode == 1 and os.path.exists(os.path.join(home, "status.json")),
          "--reset refuses to clear a running job's status")

finish("cli_switch")
