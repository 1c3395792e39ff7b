#!/usr/bin/env python3
"""Brings up a one-host Slurm cluster (slurm_cluster.py) and launches a 2-rank MPI job through it.

Usage: slurm_srun_test.py [CMD]

Without CMD: compiles a tiny MPI program with mpicc and runs it
  1. by direct launch:            srun --mpi=pmix -n 2 ./mpi_hello
  2. from inside an allocation:   salloc -n 2 srun --mpi=pmix ./mpi_hello
and checks that both ranks see MPI_COMM_WORLD of size 2 (not two singletons), have distinct ranks
and agree on an Allreduce of 1 MiB (which goes through OpenMPI's shared-memory path).
With CMD (one shell-quoted string, or several arguments): runs `salloc -n 2 CMD` instead, once, on
this host inside an allocation of 2 tasks (CMD launches its ranks itself with srun); passes when
CMD exits with 0. SLURM_CONF is set for CMD, so its own srun/sinfo calls reach this cluster.

Exits 77 with "SKIPPED: <reason>" when Slurm cannot run here (packages missing, not root, a daemon
refuses to start); with VACC_REQUIRE_SLURM=1 in the environment that is a failure (exit 1) instead.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slurm_cluster import SKIP_RETURN_CODE, SlurmCluster, SlurmUnavailable, install_sigterm_handler  # noqa: E402

NTASKS = 2
COUNT = 262144  # ints in the Allreduce: 1 MiB

MPI_HELLO = r"""
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size, n = %d;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int* in = malloc(n * sizeof(int));
  int* out = malloc(n * sizeof(int));
  for (int i = 0; i < n; ++i) in[i] = (rank + 1) * (i %% 1000);
  MPI_Allreduce(in, out, n, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  int ok = 1, factor = size * (size + 1) / 2;
  for (int i = 0; i < n; ++i) ok &= out[i] == factor * (i %% 1000);
  printf("mpi_hello rank %%d size %%d allreduce %%s\n", rank, size, ok ? "ok" : "WRONG");
  fflush(stdout);
  MPI_Finalize();
  return ok ? 0 : 1;
}
""" % COUNT


def check_ranks(what, result):
    """Both ranks report size NTASKS, distinct ranks 0..NTASKS-1 and a correct Allreduce."""
    out = result.stdout
    print(f"--- {what}: exit {result.returncode}\n{out}", end="" if out.endswith("\n") else "\n",
          flush=True)
    lines = re.findall(r"^mpi_hello rank (\d+) size (\d+) allreduce (\w+)$", out, re.M)
    problems = []
    if result.returncode != 0:
        problems.append(f"exit status {result.returncode}")
    sizes = sorted(int(s) for _, s, _ in lines)
    ranks = sorted(int(r) for r, _, _ in lines)
    if sizes != [NTASKS] * NTASKS:
        problems.append(f"sizes {sizes}, expected {NTASKS} ranks of size {NTASKS}"
                        + (" (singletons: the MPI plugin does not match OpenMPI)" if 1 in sizes else ""))
    if ranks != list(range(NTASKS)):
        problems.append(f"ranks {ranks}, expected {list(range(NTASKS))}")
    if any(ok != "ok" for _, _, ok in lines):
        problems.append("Allreduce gave wrong values")
    if problems:
        raise AssertionError(f"{what}: " + "; ".join(problems))
    print(f"ok: {what}", flush=True)


def run_tests(cluster, user_cmd):
    if user_cmd:
        print(f"--- salloc -n {NTASKS} {shlex.join(user_cmd)}", flush=True)
        r = cluster.in_allocation(user_cmd, ntasks=NTASKS, timeout=None, stdout=None, stderr=None)
        if r.returncode != 0:
            raise AssertionError(f"command exited with {r.returncode}")
        print("ok: command", flush=True)
        return
    mpicc = shutil.which("mpicc")
    if not mpicc:
        raise SlurmUnavailable("mpicc not found (apt-get install libopenmpi-dev)")
    src, exe = cluster.path("mpi_hello.c"), cluster.path("mpi_hello")
    with open(src, "w") as f:
        f.write(MPI_HELLO)
    subprocess.run([mpicc, "-O1", "-o", exe, src], check=True)
    check_ranks(f"srun --mpi=pmix -n {NTASKS}", cluster.srun([exe], ntasks=NTASKS, mpi="pmix"))
    check_ranks(f"salloc -n {NTASKS} srun --mpi=pmix",
                cluster.in_allocation(["srun", "--mpi=pmix", exe], ntasks=NTASKS))


def main():
    args = sys.argv[1:]
    user_cmd = shlex.split(args[0]) if len(args) == 1 else args
    install_sigterm_handler()
    cluster = SlurmCluster()
    try:
        with cluster:
            print(f"slurm cluster up: {cluster.dir} (MPI plugins: {' '.join(cluster.mpi_types)})",
                  flush=True)
            if "pmix" not in cluster.mpi_types and not user_cmd:
                raise SlurmUnavailable("Slurm has no pmix MPI plugin (srun --mpi=list: "
                                       f"{' '.join(cluster.mpi_types)}); OpenMPI needs it")
            try:
                run_tests(cluster, user_cmd)
            except (AssertionError, subprocess.SubprocessError):
                print(cluster.logs(), flush=True)
                raise
    except SlurmUnavailable as e:
        if os.environ.get("VACC_REQUIRE_SLURM") == "1":
            print(f"FAILED (VACC_REQUIRE_SLURM=1): Slurm unavailable: {e}", flush=True)
            return 1
        print(f"SKIPPED: Slurm unavailable: {e}", flush=True)
        return SKIP_RETURN_CODE
    except AssertionError as e:
        print(f"FAILED: {e}", flush=True)
        return 1
    print("PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
