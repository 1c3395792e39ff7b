#!/usr/bin/env python3
"""A throw-away one-host Slurm cluster for tests (Python 3 stdlib only).

    with SlurmCluster() as cluster:            # raises SlurmUnavailable when it cannot run here
        cluster.run(["sinfo"])                        # any client command, with SLURM_CONF set
        cluster.srun(["./hello"], ntasks=2)           # srun --mpi=pmix -n 2 ./hello
        cluster.in_allocation(["./launcher"], ntasks=2)   # salloc -n 2 ./launcher (which calls srun)

Everything lives in one temporary directory: a fresh munge key and munged (own socket, pid, log
and seed files), slurm.conf and mpi.conf, slurmctld/slurmd state, spool, logs and pid files.
munged, slurmctld and slurmd run in the foreground as children of this process (-F / -D) on free
TCP ports, with 127.0.0.1 as the node and controller address (the hostname need not resolve), so
several clusters (or a real Slurm) can coexist on one host. The node has max(CPUs, 2) CPUs
(SlurmdParameters=config_overrides), proctrack/linuxproc and task/none: no cgroups are needed.
On exit every job is cancelled, the daemons are stopped, whatever still belongs to the cluster
(a stray slurmstepd, a task, a client: see processes_of) is killed and the directory is removed.
If this process dies without cleaning up (SIGKILL, e.g. a ctest timeout), the daemons get SIGTERM
(PR_SET_PDEATHSIG) and a detached watchdog process does the rest.

What works with Debian 12 (Slurm 22.05.8, OpenMPI 4.1.4 built against PMIx 4.2.2):
  * direct launch: `srun --mpi=pmix -n 2 prog` (or pmix_v4, or SLURM_MPI_TYPE=pmix, or
    MpiDefault=pmix in slurm.conf, which this cluster sets when the pmix plugin exists);
  * `--mpi=pmi2` and `--mpi=none` do not: OpenMPI's ext3x component fails in MPI_Init
    ("OMPI was not built with SLURM's PMI support");
  * `salloc -n 2 mpirun prog` also works (OpenMPI reads the allocation), but as root mpirun
    needs --allow-run-as-root (or OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1).

CLI: slurm_cluster.py [-n N] [--direct] [CMD ...]
  brings the cluster up, prints sinfo, runs CMD through `salloc -n N CMD` (or, with --direct,
  `srun -n N CMD`), tears down and exits with CMD's status; 77 when Slurm cannot run here.
"""

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP_RETURN_CODE = 77
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "srun", "salloc", "sbatch", "squeue", "scancel", "scontrol")


class SlurmUnavailable(Exception):
    """Slurm cannot run on this machine (missing packages, not root, a daemon refuses to start)."""


def _which(name):
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _free_ports(count):
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _die_with_parent():
    """preexec_fn: the daemon gets SIGTERM if this process dies, even by SIGKILL (ctest timeout)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"({e})\n"


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _mem_total_mb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1024


def processes_of(cluster_dir):
    """Pids of the processes that belong to the cluster in cluster_dir: those whose executable,
    working directory or an open file lies in it (the daemons, slurmstepd, programs built there),
    or whose environment names its slurm.conf (clients, and the tasks of its jobs), and all their
    descendants. Never this process."""
    if not cluster_dir:
        return []
    prefix = os.path.realpath(cluster_dir) + "/"
    conf = f"SLURM_CONF={cluster_dir}/slurm.conf".encode()
    me = os.getpid()
    matched, parent = set(), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        parent[pid] = _ppid(pid)
        links = [f"/proc/{pid}/exe", f"/proc/{pid}/cwd"]
        try:
            links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            pass
        for link in links:
            try:
                if os.readlink(link).startswith(prefix):
                    matched.add(pid)
                    break
            except OSError:
                pass
        if pid not in matched:
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if conf in f.read().split(b"\0"):
                        matched.add(pid)
            except OSError:
                pass
    grew = True
    while grew:
        more = {pid for pid, pp in parent.items() if pp in matched and pid not in matched and pid != me}
        matched |= more
        grew = bool(more)
    return sorted(matched)


def kill_processes_of(cluster_dir, rounds=5):
    """SIGKILLs processes_of(cluster_dir) until none is left (or `rounds` tries)."""
    for _ in range(rounds):
        pids = processes_of(cluster_dir)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.3)


def _watchdog(cluster_dir, keep):
    """Waits for EOF on stdin (the cluster's owner closed it or died), then cleans up."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sys.stdin.buffer.read()
    except OSError:
        pass
    if os.path.isdir(cluster_dir):
        time.sleep(1)  # let the daemons' own SIGTERM handling run first
        kill_processes_of(cluster_dir)
        if not keep:
            shutil.rmtree(cluster_dir, ignore_errors=True)


def clean_env(extra=None):
    """The caller's environment without the variables of a Slurm job or an MPI process it may run
    in (so a test inside a real Slurm job does not talk to that job's controller), keeping MCA
    settings (OMPI_MCA_*, PMIX_MCA_*) and OMPI_ALLOW_RUN_AS_ROOT*; plus `extra`."""
    keep = ("OMPI_MCA_", "PMIX_MCA_", "OMPI_ALLOW_RUN_AS_ROOT")
    drop = ("SLURM_", "SLURMD_", "SALLOC_", "SBATCH_", "SRUN_", "PMIX_", "PMI_", "OMPI_", "ORTE_",
            "OPAL_")
    env = {k: v for k, v in os.environ.items() if k.startswith(keep) or not k.startswith(drop)}
    env.update(extra or {})
    return env


class SlurmCluster:
    def __init__(self, cpus=None, start_timeout=60.0, keep_dir=False, verbose=False):
        try:
            affinity = len(os.sched_getaffinity(0))
        except AttributeError:
            affinity = os.cpu_count() or 1
        # SlurmdParameters=config_overrides lets slurmd accept more CPUs than the machine has,
        # so a 1-CPU CI runner still gets 2 task slots.
        self.cpus = cpus or max(affinity, 2)
        self.start_timeout = start_timeout
        self.keep_dir = keep_dir
        self.verbose = verbose
        self.dir = None
        self.host = socket.gethostname().split(".")[0]
        self.env = None
        self.mpi_types = []
        self._procs = {}
        self._logs = {}
        self._watchdog_pipe = None

    # ----------------------------------------------------------------------------- public
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def run(self, cmd, timeout=120, check=False, env=None, **kw):
        """Runs a client command (list, or str for a shell) against this cluster; returns the
        CompletedProcess with text stdout and stderr merged into stdout unless given otherwise."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.STDOUT)
        full_env = dict(self.env)
        full_env.update(env or {})
        if self.verbose:
            print("+", cmd if isinstance(cmd, str) else " ".join(cmd), flush=True)
        return subprocess.run(cmd, shell=isinstance(cmd, str), env=full_env, text=True,
                              timeout=timeout, check=check, stdin=subprocess.DEVNULL, **kw)

    def srun(self, cmd, ntasks=2, mpi="pmix", extra=(), **kw):
        """`srun --mpi=<mpi> -n <ntasks> <cmd>`: direct launch (a new allocation plus one step)."""
        args = ["srun", f"--mpi={mpi}", "-n", str(ntasks), *extra]
        return self.run(args + list(cmd), **kw)

    def in_allocation(self, cmd, ntasks=2, extra=(), **kw):
        """`salloc -n <ntasks> <cmd>`: runs cmd once, on this host, inside an allocation of ntasks;
        cmd then launches its ranks itself with `srun` (MpiDefault is pmix here, so plain `srun`
        works; on other clusters use `srun --mpi=pmix`) or with OpenMPI's `mpirun`."""
        args = ["salloc", "-n", str(ntasks), *extra]
        return self.run(args + list(cmd), **kw)

    def logs(self, lines=40):
        """The last lines of each daemon's output (its stderr, else its log file)."""
        out = []
        for name, paths in self._logs.items():
            path = next((p for p in paths if os.path.exists(p) and os.path.getsize(p) > 0),
                        paths[0])
            out.append(f"----- {name}: {path}\n{_tail(path, lines)}")
        return "".join(out)

    # ----------------------------------------------------------------------------- start
    def _check_environment(self):
        missing = [n for n in DAEMONS + CLIENTS if not _which(n)]
        if missing:
            raise SlurmUnavailable(
                f"not installed: {' '.join(missing)} (apt-get install slurmctld slurmd slurm-client "
                "munge, or scripts/setup.sh --tests)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd must run as root to launch jobs (running as uid "
                                   f"{os.geteuid()})")
        if not self.host or self.host == "localhost":
            raise SlurmUnavailable(f"hostname {self.host!r} cannot name a Slurm controller")

    def start(self):
        self._check_environment()
        # munged insists every directory above its socket is world-executable.
        self.dir = tempfile.mkdtemp(prefix="vacc-slurm-")
        os.chmod(self.dir, 0o755)
        self._start_watchdog()
        for d in ("munge", "state", "spool", "log", "run", "tmp", "pmix"):
            os.mkdir(self.path(d), 0o755)
        self.env = clean_env({"SLURM_CONF": self.path("slurm.conf")})
        self._start_munge()
        ports = _free_ports(2)
        self._write_config(ports, "none")
        self.mpi_types = self._mpi_types()  # srun --mpi=list needs a slurm.conf
        if "pmix" in self.mpi_types:
            self._write_config(ports, "pmix")
        self._start_daemon("slurmctld", [_which("slurmctld"), "-D", "-f", self.path("slurm.conf")])
        self._start_daemon("slurmd", [_which("slurmd"), "-D", "-f", self.path("slurm.conf"),
                                      "-N", self.host])
        self._wait_idle()

    def _start_munge(self):
        key = self.path("munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = self.path("munge", "munge.socket")
        log = self.path("log", "munged.log")
        self._start_daemon("munged", [
            _which("munged"), "-F", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
            f"--pid-file={self.path('munge', 'munged.pid')}", f"--log-file={log}",
            f"--seed-file={self.path('munge', 'munged.seed')}"])
        deadline = time.monotonic() + 20
        while True:
            probe = subprocess.run(f"munge -n -S {self.munge_socket} | unmunge -S {self.munge_socket}",
                                   shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
            if probe.returncode == 0:
                return
            self._check_alive()
            if time.monotonic() > deadline:
                raise SlurmUnavailable("munged does not answer:\n" + probe.stdout + self.logs())
            time.sleep(0.2)

    def _mpi_types(self):
        out = subprocess.run([_which("srun"), "--mpi=list"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env=self.env, stdin=subprocess.DEVNULL, timeout=30).stdout
        # "MPI plugin types are...\n\tpmix\n\tnone\n...\nspecific pmix plugin versions available: pmix_v4"
        types = [l.strip() for l in out.splitlines() if l.startswith(("\t", " ")) and l.strip()]
        for line in out.splitlines():
            if "versions available:" in line:
                types += line.split(":", 1)[1].replace(",", " ").split()
        return types

    def _write_config(self, ports, mpi_default):
        ctld_port, slurmd_port = ports
        mem = max(256, _mem_total_mb() * 9 // 10)
        p = self.path
        slurm_logs = {name: p("log", f"{name}.log") for name in ("slurmctld", "slurmd")}
        conf = f"""\
# Generated by tests/e2e/slurm_cluster.py
ClusterName=vacctest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={p('state')}
SlurmdSpoolDir={p('spool')}
TmpFS={p('tmp')}
SlurmctldPidFile={p('run', 'slurmctld.pid')}
SlurmdPidFile={p('run', 'slurmd.pid')}
SlurmctldLogFile={slurm_logs['slurmctld']}
SlurmdLogFile={slurm_logs['slurmd']}
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SwitchType=switch/none
MpiDefault={mpi_default}
PlugStackConfig={p('plugstack.conf')}
ReturnToService=2
MailProg=/bin/true
KillWait=2
MinJobAge=2
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        with open(p("slurm.conf"), "w") as f:
            f.write(conf)
        # mpi.conf is read from slurm.conf's directory: keep PMIx's per-step dirs in ours.
        with open(p("mpi.conf"), "w") as f:
            f.write(f"PMIxCliTmpDirBase={p('pmix')}\n")
        # An empty plugstack.conf, so no SPANK plugin from /etc/slurm is loaded.
        with open(p("plugstack.conf"), "w") as f:
            f.write("")

    def _start_daemon(self, name, cmd):
        # In the foreground, the daemons log to stderr (slurmctld/slurmd to their log files too,
        # but errors before the configuration is read only to stderr).
        out = open(self.path("log", f"{name}.out"), "w")
        self._logs[name] = [out.name, self.path("log", f"{name}.log")]
        try:
            self._procs[name] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.dir, preexec_fn=_die_with_parent)
        finally:
            out.close()

    def _check_alive(self):
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise SlurmUnavailable(f"{name} exited with status {proc.returncode} at start-up:\n"
                                       + self.logs())

    def _wait_idle(self):
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while True:
            self._check_alive()
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T %E"], env=self.env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=30)
            last = r.stdout.strip()
            fields = last.split()
            if r.returncode == 0 and len(fields) >= 2 and fields[1] == "idle":
                return
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"node {self.host} not idle after {self.start_timeout:.0f} s "
                                       f"(sinfo: {last!r}):\n" + self.logs())
            time.sleep(0.3)

    # ----------------------------------------------------------------------------- stop
    def _terminate(self, name, timeout=10):
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self):
        if self.env and "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            try:  # cancel every job, so slurmstepd ends the tasks; wait until none is left
                subprocess.run(["scancel", "--full", "--user=root"], env=self.env, timeout=15,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    q = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, timeout=15,
                                       text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                    if q.returncode != 0 or not q.stdout.strip():
                        break
                    time.sleep(0.3)
            except (OSError, subprocess.SubprocessError):
                pass
            # Let slurmd reap the ended slurmstepds (each holds slurmd.log open) before it stops.
            daemons = {p.pid for p in self._procs.values()}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                    pid not in daemons and _ppid(pid) not in daemons
                    for pid in processes_of(self.dir)):
                time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            self._terminate(name)
        # A stray slurmstepd (it holds slurmd.log open), a task or a client of this cluster.
        kill_processes_of(self.dir)
        if self.dir and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._watchdog_pipe is not None:
            os.close(self._watchdog_pipe)  # the watchdog finds nothing left and exits
            self._watchdog_pipe = None

    def _start_watchdog(self):
        """A process outside this one's tree that, when this process ends (even by SIGKILL, which
        skips stop()), kills whatever still belongs to the cluster and removes the directory:
        the daemons die with this process (PR_SET_PDEATHSIG), but not slurmstepd and its tasks."""
        setsid = _which("setsid")
        if not setsid:
            return
        r, w = os.pipe()
        try:
            cmd = [setsid, "-f", sys.executable, os.path.abspath(__file__), "--watchdog", self.dir]
            if self.keep_dir:
                cmd.append("--keep")
            subprocess.run(cmd, stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           cwd="/", env=clean_env(), check=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            os.close(w)
            return
        finally:
            os.close(r)
        self._watchdog_pipe = w


def install_sigterm_handler():
    """Turns SIGTERM/SIGHUP into SystemExit, so `with SlurmCluster()` tears down."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def main():
    if sys.argv[1:2] == ["--watchdog"]:
        _watchdog(sys.argv[2], "--keep" in sys.argv[3:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--ntasks", type=int, default=2)
    ap.add_argument("--direct", action="store_true", help="srun -n N CMD instead of salloc -n N CMD")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    install_sigterm_handler()
    try:
        with SlurmCluster(keep_dir=args.keep, verbose=True) as c:
            print(f"cluster up in {c.dir}; SLURM_CONF={c.env['SLURM_CONF']}; "
                  f"mpi types: {' '.join(c.mpi_types)}", flush=True)
            print(c.run(["sinfo"]).stdout, end="", flush=True)
            if not args.cmd:
                return 0
            cmd = args.cmd[1:] if args.cmd[0] == "--" else args.cmd
            if args.direct:
                r = c.srun(cmd, ntasks=args.ntasks, timeout=None, stdout=None, stderr=None)
            else:
                r = c.in_allocation(cmd, ntasks=args.ntasks, timeout=None, stdout=None, stderr=None)
            return r.returncode
    except SlurmUnavailable as e:
        print(f"SKIPPED: Slurm unavailable: {e}", flush=True)
        return SKIP_RETURN_CODE


if __name__ == "__main__":
    sys.exit(main())
