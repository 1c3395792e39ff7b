#include "vacc/launch/launcher.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <regex>

#include "vacc/core/error.h"

namespace vacc {
namespace {

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : 0;
}

// Environment the ranks need on other hosts (mpirun forwards nothing by default).
const char* const kForwardedEnv[] = {"PATH", "LD_LIBRARY_PATH", "VACC_HOME", "VACC_COMM_TIMEOUT_S",
                                     "HOME"};

volatile sig_atomic_t child_pid = 0;

void forward_signal(int sig) {
  if (child_pid > 0) kill(pid_t(child_pid), sig);
}

}  // namespace

std::vector<std::string> pin_flavor(std::vector<std::string> argv, const std::string& spec) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == "--flavor") {
      ++i;  // and its value
      continue;
    }
    if (argv[i].rfind("--flavor=", 0) == 0) continue;
    out.push_back(argv[i]);
  }
  out.push_back("--flavor");
  out.push_back(spec);
  return out;
}

int default_threads_per_rank(int cores) {
  int local = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (local <= 0) local = env_int("SLURM_NTASKS_PER_NODE");
  if (local <= 0) local = env_int("MPI_LOCALNRANKS");
  if (local <= 0) local = 1;
  return std::max(1, cores / local);
}

LaunchCommand make_launch_command(const Flavor& flavor, const std::vector<std::string>& rank_argv,
                                  int cores) {
  const int n = flavor.total_devices();
  LaunchCommand c;
  std::vector<std::string>& a = c.argv;
  switch (flavor.launcher.kind) {
    case LauncherKind::Local:
    case LauncherKind::Mpirun: {
      a = {"mpirun"};
      if (geteuid() == 0) a.push_back("--allow-run-as-root");
      a.insert(a.end(), {"-np", std::to_string(n), "--bind-to", "none"});
      if (flavor.launcher.kind == LauncherKind::Mpirun && !flavor.launcher.hostfile.empty()) {
        a.insert(a.end(), {"--hostfile", flavor.launcher.hostfile, "--map-by",
                           "ppr:" + std::to_string(flavor.devices_per_node) + ":node"});
        for (const char* var : kForwardedEnv)
          if (std::getenv(var)) a.insert(a.end(), {"-x", var});
        c.description = "mpirun, " + std::to_string(n) + " ranks on the hosts of " +
                        flavor.launcher.hostfile;
      } else {
        // More ranks than cores (cpu-8 on a small machine) is allowed: each gets one thread.
        if (n > cores) a.push_back("--oversubscribe");
        c.description = "mpirun, " + std::to_string(n) + " ranks on this host";
      }
      break;
    }
    case LauncherKind::Slurm: {
      a = {"srun", "--ntasks=" + std::to_string(n), "--mpi=pmix", "--kill-on-bad-exit=1"};
      if (!std::getenv("SLURM_JOB_ID")) {
        // Outside an allocation srun asks for one.
        a.push_back("--nodes=" + std::to_string(flavor.nodes));
        if (!flavor.launcher.partition.empty())
          a.push_back("--partition=" + flavor.launcher.partition);
      }
      a.push_back("--ntasks-per-node=" + std::to_string(flavor.devices_per_node));
      c.description = "srun, " + std::to_string(n) + " ranks on " + std::to_string(flavor.nodes) +
                      " node(s)" +
                      (std::getenv("SLURM_JOB_ID")
                           ? " of Slurm allocation " + std::string(std::getenv("SLURM_JOB_ID"))
                           : "");
      break;
    }
  }
  a.insert(a.end(), rank_argv.begin(), rank_argv.end());
  return c;
}

std::string describe_rank_failure(const std::vector<std::string>& lines) {
  static const std::regex signal_re(
      R"(process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+)(?: \(([^)]*)\))?)");
  static const std::regex abort_re(R"(MPI_ABORT was invoked on rank (\d+))");
  static const std::regex process_re(R"(Process name:\s*\[\[\d+,\d+\],(\d+)\])");
  static const std::regex exit_re(R"(Exit code:\s*(\d+))");
  static const std::regex host_re(R"(Local host:\s*(\S+))");
  static const std::regex srun_re(R"(srun: error: (\S+): tasks? ([\d,-]+): (.*))");
  std::smatch m;
  std::string process_rank, exit_code, host;
  for (const std::string& line : lines) {
    if (std::regex_search(line, m, signal_re))
      return "rank " + m[1].str() + " (pid " + m[2].str() + ") on host " + m[3].str() +
             " died: killed by signal " + m[4].str() +
             (m[5].matched ? " (" + m[5].str() + ")" : "");
    if (std::regex_search(line, m, srun_re))
      return "rank " + m[2].str() + " on host " + m[1].str() + " failed: " + m[3].str();
    if (std::regex_search(line, m, process_re)) process_rank = m[1].str();
    if (std::regex_search(line, m, exit_re)) exit_code = m[1].str();
    if (std::regex_search(line, m, host_re)) host = m[1].str();
  }
  // A rank that failed with an error printed it, naming itself, before aborting the job.
  static const std::regex own_re(R"(vacc: error: rank (\d+) \(host ([^)]+)\): )");
  for (const std::string& line : lines)
    if (std::regex_search(line, m, own_re))
      return "rank " + m[1].str() + " on host " + m[2].str() + " failed (its error is above)";
  for (const std::string& line : lines)
    if (std::regex_search(line, m, abort_re))
      return "rank " + m[1].str() + " stopped the job (its error is above)";
  if (!process_rank.empty())
    return "rank " + process_rank + (host.empty() ? "" : " on host " + host) +
           " exited with code " + (exit_code.empty() ? "?" : exit_code);
  return "";
}

int run_launch_command(const LaunchCommand& command) {
  int err_pipe[2];
  VACC_CHECK(pipe(err_pipe) == 0, "cannot create a pipe: ", std::strerror(errno));
  const pid_t pid = fork();
  VACC_CHECK(pid >= 0, "cannot start ", command.argv[0], ": ", std::strerror(errno));
  if (pid == 0) {
    dup2(err_pipe[1], STDERR_FILENO);
    close(err_pipe[0]);
    close(err_pipe[1]);
    std::vector<char*> args;
    for (const std::string& s : command.argv) args.push_back(const_cast<char*>(s.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "vacc: error: cannot run %s: %s (is it installed? scripts/setup.sh "
                 "installs OpenMPI)\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(err_pipe[1]);
  child_pid = pid;
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  // Relay the ranks' error output line by line, keeping the tail to explain a failure.
  std::deque<std::string> tail;
  std::string line;
  char buf[4096];
  FILE* err = fdopen(err_pipe[0], "r");
  while (fgets(buf, sizeof buf, err)) {
    std::fputs(buf, stderr);
    line += buf;
    if (!line.empty() && line.back() == '\n') {
      line.pop_back();
      tail.push_back(line);
      if (tail.size() > 400) tail.pop_front();
      line.clear();
    }
  }
  fclose(err);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  child_pid = 0;
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (code != 0) {
    const std::string why =
        describe_rank_failure(std::vector<std::string>(tail.begin(), tail.end()));
    std::fprintf(stderr, "vacc: error: the job failed%s%s; %s ended every rank (exit code %d)\n",
                 why.empty() ? "" : ": ", why.c_str(), command.argv[0].c_str(), code);
  }
  return code;
}

}  // namespace vacc
