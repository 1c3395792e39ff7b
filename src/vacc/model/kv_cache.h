// KvCache: the keys and values of one sequence's tokens so far, per layer, for text
// generation (Transformer::decode). Each layer holds k and v as f32 (max_len, kv_heads *
// head_dim) tensors; rows [0, length()) are filled. Keys are stored after RoPE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vacc/core/error.h"
#include "vacc/kernels/backend.h"

namespace vacc {

struct DecodeStep;  // transformer_decode.cpp

class KvCache {
 public:
  KvCache() = default;
  // Caches of max_len positions for num_layers layers of kv_width (= kv_heads * head_dim)
  // columns. Uninitialised; only rows below length() are ever read.
  KvCache(Backend& backend, int64_t num_layers, int64_t kv_width, int64_t max_len)
      : max_len_(max_len), kv_width_(kv_width) {
    VACC_CHECK(num_layers >= 0 && kv_width > 0 && max_len > 0, "KV cache: bad geometry (",
               num_layers, " layers, width ", kv_width, ", ", max_len, " positions)");
    for (int64_t l = 0; l < num_layers; ++l) {
      keys_.push_back(backend.empty({max_len, kv_width}, DType::F32, MemoryCategory::Activations,
                                    "kv cache keys (layer " + std::to_string(l) + ")"));
      values_.push_back(backend.empty({max_len, kv_width}, DType::F32, MemoryCategory::Activations,
                                      "kv cache values (layer " + std::to_string(l) + ")"));
    }
  }

  int64_t num_layers() const { return int64_t(keys_.size()); }
  int64_t kv_width() const { return kv_width_; }
  int64_t max_len() const { return max_len_; }
  // Tokens cached so far: the position of the next token.
  int64_t length() const { return length_; }
  int64_t remaining() const { return max_len_ - length_; }

  Tensor& keys(int64_t layer) { return keys_.at(size_t(layer)); }
  Tensor& values(int64_t layer) { return values_.at(size_t(layer)); }

  // Records that n more tokens were written (Transformer::decode calls this).
  void advance(int64_t n) {
    VACC_CHECK(n >= 0 && n <= remaining(), "KV cache: cannot advance by ", n, " with ", remaining(),
               " of ", max_len_, " positions free");
    length_ += n;
  }
  // Transformer::decode's single-token step replayed as a graph, when it uses one: its buffers
  // and graph read this cache's tensors, so they live with it.
  std::shared_ptr<DecodeStep> decode_step;

  // Forgets the cached tokens (a new sequence); keeps the memory. truncate(n) keeps the first n.
  void clear() { length_ = 0; }
  void truncate(int64_t n) {
    VACC_CHECK(n >= 0 && n <= length_, "KV cache: cannot truncate ", length_, " tokens to ", n);
    length_ = n;
  }

 private:
  std::vector<Tensor> keys_, values_;
  int64_t max_len_ = 0, kv_width_ = 0, length_ = 0;
};

}  // namespace vacc
