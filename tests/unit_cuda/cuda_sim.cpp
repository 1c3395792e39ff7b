#include "cuda_sim.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace vacc_sim {
namespace {

#if defined(__x86_64__)
// switch_stack(&save, next): saves the callee-saved registers on the current stack, stores its
// pointer in *save, and resumes the stack `next` (x86-64 System V). The FPU and SSE control
// words are not switched: no kernel changes them, and their loads made a switch several times
// slower (switches were most of the simulator's time).
extern "C" void vacc_sim_switch_stack(void** save, void* next);
asm(R"(
.text
.globl vacc_sim_switch_stack
.type vacc_sim_switch_stack,@function
vacc_sim_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size vacc_sim_switch_stack, .-vacc_sim_switch_stack
)");
#else
#error "the CUDA kernel simulator needs x86-64"
#endif

constexpr size_t kStackBytes = size_t(256) << 10;

enum class State { Ready, WaitBlock, WaitWarp, Done };

struct Fiber {
  void* sp = nullptr;
  State state = State::Ready;
  uint3 tid{};
};

struct BlockRun {
  std::vector<Fiber> fibers;
  std::vector<std::array<uint64_t, 32>> slots;
  std::vector<unsigned char> shared;
  const std::function<void()>* body = nullptr;
  size_t current = 0;
  void* scheduler_sp = nullptr;
};

BlockRun* run = nullptr;
std::mt19937 rng(12345);
std::vector<std::unique_ptr<char[]>> stacks;  // kept between launches

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "vacc_sim: %s\n", message.c_str());
  std::abort();
}

void fiber_entry() {
  (*run->body)();
  run->fibers[run->current].state = State::Done;
  vacc_sim_switch_stack(&run->fibers[run->current].sp, run->scheduler_sp);
  die("a finished fiber was resumed");
}

// A fresh stack whose first switch "returns" into fiber_entry. The stacks are allocated alike,
// so their tops would share cache sets: every switch to the next thread missed the caches (most
// of the simulator's time). The i-th stack starts 1088 (17 lines) times i mod 61 bytes lower,
// so that the threads' hot frames spread over 64 KiB of sets.
void* initial_stack(char* base, unsigned i) {
  uintptr_t top = reinterpret_cast<uintptr_t>(base + kStackBytes - (i % 61) * 1088);
  top &= ~uintptr_t(15);
  auto* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;                                            // fiber_entry's (unused) return address
  *--sp = reinterpret_cast<uint64_t>(&fiber_entry);     // ret target
  for (int i = 0; i < 6; ++i) *--sp = 0;                // rbp rbx r12 r13 r14 r15
  // After the 6 registers and ret: rsp = top - 8 (a call's alignment).
  return sp;
}

std::string where(const Fiber& f) {
  return "thread (" + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," +
         std::to_string(f.tid.z) + ") of block (" + std::to_string(blockIdx.x) + "," +
         std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) + ")";
}

void run_block(BlockRun& r, unsigned nthreads) {
  while (stacks.size() < nthreads) stacks.emplace_back(new char[kStackBytes]);
  r.fibers.assign(nthreads, Fiber{});
  for (unsigned i = 0; i < nthreads; ++i) {
    Fiber& f = r.fibers[i];
    f.tid = uint3{i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y)};
    f.sp = initial_stack(stacks[i].get(), i);
  }
  const unsigned warps = (nthreads + 31) / 32;
  r.slots.assign(warps, {});
  std::vector<size_t> order;
  for (;;) {
    // The ready threads run in a shuffled order (seeded: runs repeat), so that a thread that
    // reads what another writes without a barrier between them sees stale data in some run.
    order.clear();
    for (size_t i = 0; i < r.fibers.size(); ++i)
      if (r.fibers[i].state == State::Ready) order.push_back(i);
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i : order) {
      r.current = i;
      threadIdx = r.fibers[i].tid;
      vacc_sim_switch_stack(&r.scheduler_sp, r.fibers[i].sp);
    }
    if (!order.empty()) continue;
    bool all_done = true, released = false;
    for (unsigned w = 0; w < warps; ++w) {
      bool live = false, all_at_warp = true;
      for (unsigned i = w * 32; i < std::min(nthreads, (w + 1) * 32); ++i) {
        if (r.fibers[i].state == State::Done) continue;
        live = true;
        all_at_warp &= r.fibers[i].state == State::WaitWarp;
      }
      all_done &= !live;
      if (live && all_at_warp) {
        for (unsigned i = w * 32; i < std::min(nthreads, (w + 1) * 32); ++i)
          if (r.fibers[i].state == State::WaitWarp) r.fibers[i].state = State::Ready;
        released = true;
      }
    }
    if (all_done) return;
    if (released) continue;
    bool all_at_block = true;
    for (const Fiber& f : r.fibers) all_at_block &= f.state == State::Done || f.state == State::WaitBlock;
    if (all_at_block) {
      for (Fiber& f : r.fibers)
        if (f.state == State::WaitBlock) f.state = State::Ready;
      continue;
    }
    // Deadlock: some threads wait at __syncthreads, others of the same warp at a shuffle.
    for (const Fiber& f : r.fibers)
      if (f.state == State::WaitWarp) die("divergent synchronisation: " + where(f) +
                                          " waits at a warp shuffle while others wait at "
                                          "__syncthreads()");
    die("deadlock in the simulated block");
  }
}

}  // namespace

void wait(Wait what) {
  Fiber& f = run->fibers[run->current];
  f.state = what == Wait::Block ? State::WaitBlock : State::WaitWarp;
  vacc_sim_switch_stack(&f.sp, run->scheduler_sp);
  threadIdx = f.tid;  // (the scheduler sets it too)
}

void* dynamic_shared_bytes() { return run->shared.data(); }

uint64_t* warp_slots() { return run->slots[linear_thread() / 32].data(); }

void launch(dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
            const std::function<void()>& body) {
  if (record_if_capturing(stream, [=] { launch(grid, block, smem_bytes, nullptr, body); }))
    return;
  const unsigned nthreads = block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024) die("bad block size " + std::to_string(nthreads));
  if (block.x * block.y * block.z % 32 != 0 && nthreads > 32)
    die("block size " + std::to_string(nthreads) + " is not a multiple of 32");
  BlockRun r;
  r.body = &body;
  BlockRun* outer = run;
  run = &r;
  gridDim = grid;
  blockDim = block;
  // The blocks run one at a time in a shuffled order, another on every launch (a GPU gives no
  // order either): a result that depends on it, such as float atomics that two blocks add to one
  // address, then differs between two runs of the same work, as it can on a GPU.
  std::vector<uint3> blocks;
  blocks.reserve(size_t(grid.x) * grid.y * grid.z);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back(uint3{x, y, z});
  std::shuffle(blocks.begin(), blocks.end(), rng);
  for (const uint3& b : blocks) {
    blockIdx = b;
    r.shared.assign(smem_bytes + 16, 0);
    run_block(r, nthreads);
  }
  run = outer;
}

}  // namespace vacc_sim
