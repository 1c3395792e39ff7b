// Timing of the fused classifier + cross-entropy CPU kernel. Built as build/bin/
// classifier_ce_bench with -DVACC_BUILD_BENCH=ON, or by hand:
//   g++ -O3 -march=native -fopenmp -std=c++20 -Isrc bench/classifier_ce_bench.cpp
//       build/src/vacc/libvacc_kernels.a build/src/vacc/libvacc_core.a -ldnnl -o /tmp/cce_bench
//   /tmp/cce_bench [N C V threads reps]
// Prints one call's time (fwd+bwd and forward only) in f32 and bf16, the GFLOP/s counting the
// three products (6 N C V flops), and the same chunked products timed alone as plain matmuls.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <random>
#include <vector>

#include "vacc/kernels/cpu/cpu_kernels.h"

using namespace vacc;

template <typename Fn>
double seconds(Fn&& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int main(int argc, char** argv) {
  int64_t n = argc > 1 ? atoll(argv[1]) : 2048, c = argc > 2 ? atoll(argv[2]) : 512,
          v = argc > 3 ? atoll(argv[3]) : 32000;
  int threads = argc > 4 ? atoi(argv[4]) : 2;
  omp_set_num_threads(threads);
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(size_t(n * c)), w(size_t(v * c));
  for (auto& e : x) e = u(rng);
  for (auto& e : w) e = u(rng) * 0.1f;
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (auto& l : labels) l = int32_t(rng() % uint64_t(v));
  std::vector<bf16> xb(x.size()), wb(w.size());
  cpu::convert(x.data(), DType::F32, xb.data(), DType::BF16, int64_t(x.size()));
  cpu::convert(w.data(), DType::F32, wb.data(), DType::BF16, int64_t(w.size()));
  std::vector<float> dx(size_t(n * c)), dw(size_t(v * c), 0.0f);
  const double flops = 6.0 * double(n) * double(c) * double(v);
  std::printf("N=%ld C=%ld V=%ld threads=%d\n", long(n), long(c), long(v), threads);

  // Best of `reps` rounds, each round timing the kernel and the bare products it issues
  // back to back, so that both see the same machine load.
  const int reps = argc > 5 ? atoi(argv[5]) : 5;
  const int64_t chunk = std::max<int64_t>(1, (int64_t(32) << 20) / (v * 4));
  const int64_t chunks = (n + chunk - 1) / chunk, R = (n + chunks - 1) / chunks;
  for (DType dt : {DType::F32, DType::BF16}) {
    const void* xp = dt == DType::F32 ? static_cast<const void*>(x.data()) : xb.data();
    const void* wp = dt == DType::F32 ? static_cast<const void*>(w.data()) : wb.data();
    const size_t es = dtype_size(dt);
    std::vector<float> logits(size_t(R) * size_t(v));
    std::vector<unsigned char> dlog(size_t(R) * size_t(v) * es);
    double loss = 0;
    auto full = [&] {
      loss = cpu::classifier_cross_entropy(xp, wp, dt, labels.data(), n, c, v, 1.0f / float(n),
                                           dx.data(), dw.data());
    };
    auto fwd = [&] {
      loss = cpu::classifier_cross_entropy(xp, wp, dt, labels.data(), n, c, v, 1.0f, nullptr,
                                           nullptr);
    };
    auto products = [&] {  // the same three products per chunk, without the softmax
      for (int64_t r0 = 0; r0 < n; r0 += R) {
        int64_t rows = std::min(R, n - r0);
        const auto* xc = static_cast<const unsigned char*>(xp) + size_t(r0) * size_t(c) * es;
        cpu::matmul(xc, false, wp, true, logits.data(), rows, v, c, dt, DType::F32, 1, 0, nullptr);
        cpu::matmul(dlog.data(), false, wp, false, dx.data() + r0 * c, rows, c, v, dt, DType::F32,
                    1, 0, nullptr);
        cpu::matmul(dlog.data(), true, xc, false, dw.data(), v, c, rows, dt, DType::F32, 1, 1,
                    nullptr);
      }
    };
    full(), fwd(), products();  // warm-up: primitive creation, page faults
    double t_full = 1e30, t_fwd = 1e30, t_mm = 1e30;
    for (int r = 0; r < reps; ++r) {
      t_full = std::min(t_full, seconds(full));
      t_mm = std::min(t_mm, seconds(products));
      t_fwd = std::min(t_fwd, seconds(fwd));
    }
    std::printf(
        "%-4s fwd+bwd %.3f s = %.1f GFLOP/s | fwd only %.3f s | its 3 products alone (%ld chunks "
        "of %ld rows) %.3f s = %.1f GFLOP/s | loss/row %.4f\n",
        dtype_name(dt).c_str(), t_full, flops / t_full * 1e-9, t_fwd, long(chunks), long(R), t_mm,
        flops / t_mm * 1e-9, loss / double(n));
  }
  return 0;
}
