// Timing of the CPU attention kernels (built by bench/CMakeLists.txt into build/bin):
//   OMP_NUM_THREADS=2 build/bin/attention_bench [B T Hq Hkv D]
#include <omp.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "vacc/kernels/cpu/cpu_kernels.h"

using namespace vacc;

int main(int argc, char** argv) {
  int64_t B = 4, T = 512, Hq = 8, Hkv = 2, D = 64;
  if (argc == 6) {
    B = atoll(argv[1]); T = atoll(argv[2]); Hq = atoll(argv[3]); Hkv = atoll(argv[4]); D = atoll(argv[5]);
  }
  const int64_t W = (Hq + 2 * Hkv) * D;
  std::vector<float> qkv(size_t(B * T * W)), dqkv(qkv.size()), out(size_t(B * T * Hq * D)),
      dout(out.size()), lse(size_t(B * Hq * T));
  std::vector<bf16> out16(out.size()), dout16(out.size());
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (float& x : qkv) x = u(rng);
  for (size_t i = 0; i < dout.size(); ++i) { dout[i] = u(rng); dout16[i] = float_to_bf16(dout[i]); }
  const double fwd_flops = 2.0 * B * Hq * T * T * D, bwd_flops = 2.5 * fwd_flops;
  auto time = [](auto&& fn) {
    fn();
    double best = 1e30;
    for (int rep = 0; rep < 30; ++rep) {
      // With one thread, the thread's CPU time (robust to other processes on a shared machine).
      timespec c0, c1;
      auto t0 = std::chrono::steady_clock::now();
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
      fn();
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (omp_get_max_threads() == 1) s = double(c1.tv_sec - c0.tv_sec) + 1e-9 * double(c1.tv_nsec - c0.tv_nsec);
      best = std::min(best, s);
    }
    return best;
  };
  for (DType dt : {DType::F32, DType::BF16}) {
    void* o = dt == DType::F32 ? (void*)out.data() : (void*)out16.data();
    const void* go = dt == DType::F32 ? (const void*)dout.data() : (const void*)dout16.data();
    double tf = time([&] { cpu::attention_forward(qkv.data(), B, T, Hq, Hkv, D, o, dt, lse.data()); });
    if (std::getenv("FWD_ONLY")) { std::printf("%s fwd %.2f ms %.1f GFLOP/s\n", dtype_name(dt).c_str(), tf * 1e3, fwd_flops / tf * 1e-9); continue; }
    double tb = time([&] { cpu::attention_backward(go, qkv.data(), o, dt, lse.data(), B, T, Hq, Hkv, D, dqkv.data()); });
    std::printf("%s  fwd %.2f ms %.1f GFLOP/s   bwd %.2f ms %.1f GFLOP/s\n", dtype_name(dt).c_str(),
                tf * 1e3, fwd_flops / tf * 1e-9, tb * 1e3, bwd_flops / tb * 1e-9);
  }
}
