#include "vacc/comm/mpi_process.h"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "vacc/comm/communicator.h"
#include "vacc/comm/timed_poll.h"
#include "vacc/core/error.h"

namespace vacc {

namespace {

struct MpiProcess {
  std::mutex mutex;
  bool initialised_by_vacc = false;
  std::vector<std::function<bool()>> kept;
};

MpiProcess& process() {
  // Never destroyed: finalize_mpi runs from atexit, possibly after static destructors.
  static MpiProcess* p = new MpiProcess;
  return *p;
}

bool mpi_active() {
  int initialised = 0, finalized = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalized);
  return initialised && !finalized;
}

void finalize_at_exit() {
  finalize_mpi();
}

}  // namespace

void ensure_mpi_initialized() {
  MpiProcess& p = process();
  std::lock_guard lock(p.mutex);
  int initialised = 0, finalized = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalized);
  VACC_CHECK(!finalized, "MPI was already finalized in this process; no communicator can start");
  if (initialised) return;
  int provided = 0;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  VACC_CHECK(rc == MPI_SUCCESS, "MPI_Init_thread failed (error ", rc, ")");
  p.initialised_by_vacc = true;
  std::atexit(finalize_at_exit);
}

void mpi_keep_until_done(std::function<bool()> test_done) {
  MpiProcess& p = process();
  std::lock_guard lock(p.mutex);
  p.kept.push_back(std::move(test_done));
}

void mpi_progress_kept() {
  MpiProcess& p = process();
  std::lock_guard lock(p.mutex);
  std::erase_if(p.kept, [](std::function<bool()>& done) { return done(); });
}

void finalize_mpi() {
  MpiProcess& p = process();
  {
    std::lock_guard lock(p.mutex);
    if (!p.initialised_by_vacc || !mpi_active()) return;
  }
  TimedPoll poll(std::chrono::seconds(2));
  bool all_done = poll.until([&] {
    mpi_progress_kept();
    std::lock_guard lock(p.mutex);
    return p.kept.empty();
  });
  if (!all_done) {
    size_t n = 0;
    {
      std::lock_guard lock(p.mutex);
      n = p.kept.size();
      // Their buffers may belong to allocators that are gone by now: never destroy them.
      new std::vector<std::function<bool()>>(std::move(p.kept));
    }
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    mpi_abort("vacc: error: rank " + std::to_string(rank) + " (host " + host_name() +
                  "): " + std::to_string(n) +
                  " communication operation(s) that timed out earlier never finished (a peer "
                  "died or hangs); ending the job",
              1);
  }
  MPI_Finalize();
}

void mpi_abort(const std::string& message, int code) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  if (mpi_active()) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return "MPI error " + std::to_string(code);
  return std::string(text, size_t(length));
}

}  // namespace vacc
