// The MPI library of this process: initialised once (on first use, by any MpiCommunicator),
// finalized once at exit. Also what the job does when a rank fails (mpi_abort) and the
// operations whose wait timed out and that MPI may still finish later (kept with their buffers
// until it does, since MPI operations cannot be cancelled).
#pragma once

#include <functional>
#include <string>

namespace vacc {

// Initialises MPI (MPI_Init_thread, MPI_THREAD_SERIALIZED: MPI is called from one thread at a
// time) unless it already is, and registers finalize_mpi() to run at exit. Idempotent.
void ensure_mpi_initialized();

// Finalizes MPI when vacc initialised it and it is not finalized yet; called at exit, may be
// called earlier (then no communicator may be used afterwards). Kept operations get up to 2 s to
// finish; when some still have not (a peer hangs), the job is aborted instead, since
// MPI_Finalize would wait for them forever.
void finalize_mpi();

// Prints `message` (which should name the rank and host: "vacc: error: rank 1 (host h): ...")
// to stderr and ends the whole job (every rank) with MPI_Abort; without MPI, ends this process.
// For a rank that failed, so the other ranks never wait for it.
[[noreturn]] void mpi_abort(const std::string& message, int code = 1);

// Keeps an operation MPI may still be working on: `test_done` (which also holds its buffers) is
// polled by mpi_progress_kept() and at finalize until it returns true.
void mpi_keep_until_done(std::function<bool()> test_done);
void mpi_progress_kept();

// MPI's text for an error code.
std::string mpi_error_text(int code);

}  // namespace vacc
