#include "vacc/model/initialization.h"

#include <algorithm>
#include <cmath>

#include "vacc/core/error.h"

namespace vacc {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The key of the stream (seed, name): hashed once per tensor, not once per element.
uint64_t stream_key(uint64_t seed, const std::string& name) { return splitmix64(seed ^ fnv1a(name)); }

// Box-Muller on two uniforms drawn from a counter-based hash.
float normal_at(uint64_t key, uint64_t index) {
  uint64_t a = splitmix64(key + 2 * index), b = splitmix64(key + 2 * index + 1);
  double u1 = (double(a >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  double u2 = double(b >> 11) * 0x1.0p-53;          // [0, 1)
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

}  // namespace

float counter_normal(uint64_t seed, const std::string& name, uint64_t index) {
  return normal_at(stream_key(seed, name), index);
}

void initialize_parameters(Backend& backend, const ModelConfig& config,
                           const ParameterTable& table, uint64_t seed, Tensor& flat_params) {
  initialize_parameters(backend, config, table, seed, flat_params, table.whole());
}

void initialize_parameters(Backend& backend, const ModelConfig& config,
                           const ParameterTable& table, uint64_t seed, Tensor& flat_params,
                           FlatRange range) {
  VACC_CHECK(flat_params.numel() >= range.numel(), "initialize_parameters: ",
             flat_params.numel(), " elements cannot hold the range of ", range.numel());
  for (const CheckpointTensor& ct : table.checkpoint_tensors()) {
    const int64_t start = table.entry(ct.entry).offset + ct.offset;
    const int64_t lo = std::max(start, range.begin);
    const int64_t hi = std::min(start + shape_numel(ct.shape), range.end);
    if (lo >= hi) continue;
    std::vector<float> host(size_t(hi - lo));
    if (ends_with(ct.name, "norm.weight")) {
      std::fill(host.begin(), host.end(), 1.0f);
    } else if (ends_with(ct.name, ".bias")) {
      std::fill(host.begin(), host.end(), 0.0f);
    } else {
      const float stddev = float(config.initializer_range);
      const uint64_t key = stream_key(seed, ct.name);
      // A piece of a tensor draws the numbers of its elements' places in the whole tensor.
      // Every element is a pure function of its place, so the threads cannot change a value.
#pragma omp parallel for schedule(static)
      for (int64_t i = lo; i < hi; ++i)
        host[size_t(i - lo)] = stddev * normal_at(key, uint64_t(ct.full_index(i - start)));
    }
    Tensor dst = flat_params.view(lo - range.begin, {hi - lo});
    backend.upload(host.data(), dst);
  }
}

}  // namespace vacc
