// Time per token of vacc generate's sampling on the CPU (TokenSampler::next, which is the CPU
// backend's sample_rows) over a Qwen-sized vocabulary (151936), at the defaults (temperature 0.7, top_p 0.9), greedy, and
// top_p 1. Two kinds of logits: "peaked" (a trained model's: a few tokens stand out) and
// "flat" (a randomly initialised model's: nearly uniform, so the nucleus is most of the
// vocabulary). Usage: sampler_bench [calls per case, default 200]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "vacc/runtime/generator.h"

namespace {

std::vector<float> logits_of(const std::string& kind, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, kind == "flat" ? 0.1f : 2.0f);
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& x : logits) x = normal(rng);
  if (kind == "peaked")
    for (int i = 0; i < 20; ++i) logits[size_t(rng() % uint64_t(vocab))] += 12.0f - float(i) * 0.3f;
  return logits;
}

}  // namespace

int main(int argc, char** argv) {
  const int calls = argc > 1 ? std::atoi(argv[1]) : 200;
  const int64_t vocab = 151936;
  std::printf("%-8s %-22s %12s\n", "logits", "sampling", "ms per token");
  for (const std::string kind : {"peaked", "flat"}) {
    const std::vector<float> logits = logits_of(kind, vocab, 7);
    struct Setting {
      const char* name;
      float temperature, top_p;
    };
    for (const Setting& s : {Setting{"T 0.7, top_p 0.9", 0.7f, 0.9f}, Setting{"T 1, top_p 1", 1.0f, 1.0f},
                             Setting{"greedy", 0.0f, 0.9f}}) {
      vacc::TokenSampler sampler(s.temperature, s.top_p, 1);
      int64_t checksum = 0;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < calls; ++i) checksum += sampler.next(logits.data(), vocab);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
          calls;
      std::printf("%-8s %-22s %12.3f   (token sum %lld)\n", kind.c_str(), s.name, ms,
                  static_cast<long long>(checksum));
    }
  }
  return 0;
}
