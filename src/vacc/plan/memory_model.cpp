#include "vacc/plan/memory_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "vacc/core/classifier_chunks.h"
#include "vacc/core/device_allocator.h"
#include "vacc/core/gpu_scratch.h"
#include "vacc/model/model_shard.h"
#include "vacc/model/parameter_table.h"
#include "vacc/plan/stage_split.h"

namespace vacc {
namespace {

constexpr double kF32 = 4.0;

// ZeRO's shard of a layout of `total` elements (FlatPartition's rule: ceil, 16-aligned).
int64_t shard_size(int64_t total, int ranks) {
  return ((total + ranks - 1) / ranks + 15) / 16 * 16;
}

int64_t owned(int64_t total, int ranks, int rank) {
  const int64_t s = shard_size(total, ranks);
  const int64_t begin = std::min(total, int64_t(rank) * s);
  return std::min(total, begin + s) - begin;
}

// Bytes one micro-batch keeps per layer under a recomputation mode, and what the shared
// recompute scratch holds (N tokens; mirrors BlockActivations).
struct LayerActivations {
  double kept = 0, scratch = 0;
};

LayerActivations layer_activations(const ModelShard& s, const ModelConfig& c, int64_t batch,
                                   int64_t seq, double compute_bytes, Recompute mode) {
  const double N = double(batch * seq), C = double(c.hidden_size), F = double(s.ffn_size);
  const double D = double(c.head_dim), hq = double(s.q_heads), hkv = double(s.kv_heads);
  const double norms = 2 * N * C * compute_bytes + 2 * N * kF32;        // norm1/2, rstd1/2
  const double attention = N * (hq + 2 * hkv) * D * compute_bytes       // qkv
                           + N * hq * D * kF32 + N * hq * kF32          // attn, lse
                           + (compute_bytes < kF32 ? N * hq * D * compute_bytes : 0.0);  // attn_c
  const double mlp = N * C * kF32 + N * 2 * F * compute_bytes + N * F * compute_bytes;  // h, gate_up, act
  const double all = norms + attention + mlp;
  // Full also keeps a scratch for the recomputed layer's output (N, C) f32.
  if (mode == Recompute::Full) return {0, all + N * C * kF32};
  if (mode == Recompute::Selective) return {norms + mlp, attention};
  return {all, 0};
}

// The largest transient scratch a GPU rank allocates in a micro-batch, on top of what it holds
// then (the memory model's other terms); every row counted, as an upper bound.
// - The classifier (last stage; whole vocabulary or this tp rank's shard): the row list, the
//   logits chunk (f32, or bf16 in mixed precision; the gradient overwrites it), the row losses,
//   and the chunk's rows of x and of dx gathered when ignored labels make them non-contiguous.
// - Attention (each layer): backward, rowsum(dO * O) and, in mixed precision, with grouped
//   heads each q head's f32 share of dK and dV (the tensor-core kernels read the bf16 qkv
//   activation as it is) (kernels/cuda/attention*.cu). The cuBLASLt route for other head dims
//   holds more and is not counted.
// With graphs the attention's scratch is kept for them, in the allocator's rounded blocks, beside
// the classifier's.
double gpu_transient_scratch(const ModelShard& s, const ModelConfig& c, const DeviceScratch& d,
                             int64_t micro, int64_t seq, bool mixed, bool graphs) {
  const double N = double(micro * seq), C = double(c.hidden_size), cb = mixed ? 2.0 : 4.0;
  auto round_256 = [](double bytes) { return std::ceil(bytes / 256) * 256; };
  const double rowsum = round_256(N * double(s.q_heads) * kF32);
  const double dkdv_shares =
      s.kv_heads < s.q_heads ? 2 * round_256(N * double(s.q_heads * c.head_dim) * kF32) : 0.0;
  const double attention = mixed ? rowsum + dkdv_shares : rowsum;
  double classifier = 0;
  if (s.has_head && s.vocab_size > 0) {
    const double rows = double(
        classifier_chunk_rows(micro * seq, s.vocab_size, d.classifier_chunk_bytes, int64_t(cb)));
    classifier = 2 * N * kF32 + rows * double(s.vocab_size) * cb + rows * C * (cb + kF32);
  }
  if (graphs) return classifier + double(gpu_block_bytes(size_t(attention)));
  return std::max(classifier, attention);
}

}  // namespace

DeviceScratch gpu_device_scratch(double budget_bytes) {
  DeviceScratch d;
  d.gpu = true;
  d.fixed_bytes = double(kCublasLtWorkspaceBytes);
  d.classifier_chunk_bytes = gpu_classifier_chunk_bytes(size_t(std::max(0.0, budget_bytes)));
  return d;
}

std::string MemoryBreakdown::str() const {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%s (parameters %s, gradients %s, optimizer state %s, activations %s, buffers %s)",
                format_bytes(size_t(total())).c_str(), format_bytes(size_t(parameters)).c_str(),
                format_bytes(size_t(gradients)).c_str(),
                format_bytes(size_t(optimizer_state)).c_str(),
                format_bytes(size_t(activations)).c_str(), format_bytes(size_t(buffers)).c_str());
  return buf;
}

std::vector<StageParameters> stage_parameters(const ModelConfig& c, int pp, int tp,
                                              int64_t seq_len) {
  const auto ranges = split_layers(c, pp, seq_len);
  std::vector<StageParameters> stages;
  for (int stage = 0; stage < pp; ++stage) {
    StageParameters s{ModelShard::tensor_parallel(c, ranges[size_t(stage)].first,
                                                  ranges[size_t(stage)].second, stage == 0,
                                                  stage == pp - 1, 0, tp)};
    const ParameterTable table(c, s.shard);
    s.numel = table.total_numel();
    for (size_t g = 0; g < table.groups().size(); ++g) {
      const int64_t n = table.groups()[g].numel;
      if (g == table.embed_group()) s.embed = n;
      else if (g == table.head_group()) s.head = n;
      else s.largest_layer = std::max(s.largest_layer, n);
    }
    stages.push_back(std::move(s));
  }
  return stages;
}

MemoryBreakdown predict_rank_memory(const ModelConfig& c, const ParallelConfig& p,
                                    const MemoryQuery& q, int stage, int dp_rank,
                                    const std::vector<StageParameters>& given) {
  const std::vector<StageParameters> computed =
      given.empty() ? stage_parameters(c, p.pp, p.tp, q.seq_len) : std::vector<StageParameters>{};
  const StageParameters& sp = (given.empty() ? computed : given)[size_t(stage)];
  const ModelShard& shard = sp.shard;
  const double cb = q.dtype == DType::BF16 ? 2.0 : 4.0;
  const bool mixed = q.dtype == DType::BF16;
  const int64_t P = sp.numel;
  const int64_t mine = owned(P, p.dp, dp_rank);
  const int64_t micro = q.global_batch / p.dp / p.micro_batches;
  const double N = double(micro * q.seq_len), C = double(c.hidden_size);
  const double F = double(shard.ffn_size), D = double(c.head_dim);
  const double hq = double(shard.q_heads), W = (hq + 2 * double(shard.kv_heads)) * D;
  const int64_t largest_layer = sp.largest_layer, embed = sp.embed, head = sp.head;
  const bool tied_here = c.tie_word_embeddings && shard.has_embedding && shard.has_head;
  const bool tied_split = c.tie_word_embeddings && p.pp > 1 && (shard.has_embedding || shard.has_head);

  MemoryBreakdown m;
  // Parameters: the f32 master (all, or the shard), the bf16 compute copy, ZeRO-3's gathered
  // groups at the peak (the head, with a tied embedding the embedding too, and one prefetched
  // layer).
  if (p.zero < 3) {
    m.parameters = kF32 * double(P) + (mixed ? 2.0 * double(P) : 0.0);
  } else {
    const double gathered = double(std::max<int64_t>(head + (tied_here ? embed : 0), embed) +
                                   largest_layer);
    m.parameters = kF32 * double(shard_size(P, p.dp)) + (kF32 + (mixed ? 2.0 : 0.0)) * gathered;
  }
  // Gradients: full (ZeRO 0/1), the shard (1-3), buckets in flight (2/3: the tied embedding
  // through the whole backward, the current group and two being reduced; with several
  // micro-batches the previous micro-batch's embedding bucket, reduced last, is still in
  // flight when the next backward opens its own — measured on cpu-2, docs/PLANNER.md).
  const double shard_bytes = kF32 * double(shard_size(P, p.dp));
  if (p.zero == 0) m.gradients = kF32 * double(P);
  if (p.zero == 1) m.gradients = kF32 * double(P) + shard_bytes;
  if (p.zero >= 2) {
    const bool tied = tied_here || tied_split;
    double live = double((tied ? embed + head : head) + 3 * largest_layer);
    if (p.micro_batches > 1 && tied) live += double(embed);
    m.gradients = shard_bytes + kF32 * live;
  }
  m.optimizer_state = 2 * kF32 * double(p.zero == 0 ? P : mine);

  // Activations: the micro-batches in flight (1F1B: pp - stage; GPipe: all), each with the
  // residual stream of the stage's layers and what each layer keeps; one recompute scratch.
  const int64_t in_flight = p.schedule == PipelineScheduleKind::GPipe
                                ? p.micro_batches
                                : std::min<int64_t>(p.pp - stage, p.micro_batches);
  const LayerActivations la = layer_activations(shard, c, micro, q.seq_len, cb, p.recompute);
  const double L = double(shard.num_layers());
  double per_micro = (L + 1) * N * C * kF32 + L * la.kept;
  if (shard.has_head) per_micro += N * C * cb + N * kF32;  // final norm, rstd
  m.activations = double(in_flight) * per_micro + la.scratch;

  // Buffers: the layer workspace, the trainer's ids/labels/positions and residual gradient,
  // pipeline gradient sends, RoPE tables, small scalars.
  double ws = 3 * N * C * kF32 + N * F * cb /* dact */ + N * 2 * F * cb + N * hq * D * kF32 +
              N * W * kF32;
  if (mixed) ws += N * C * 2 + N * W * 2;  // dy_c, dqkv_c
  m.buffers = ws + N * C * kF32 /* model's dx scratch */ + N * C * kF32 /* trainer's dx */ +
              double(in_flight) * 2 * N * 4 + N * 4 /* ids, labels, positions */ +
              (stage > 0 ? 2 * N * C * kF32 : 0.0) /* gradient sends */ +
              2 * double(q.seq_len) * D / 2 * kF32 /* rope */ +
              (p.tp > 1 && shard.has_head ? double(p.tp + 2) * N * kF32 : 0.0) /* lse */;
  if (q.scratch.gpu) {
    const bool graphs = q.scratch.graphs && p.layer_graphs_possible();
    m.buffers += q.scratch.fixed_bytes +
                 gpu_transient_scratch(shard, c, q.scratch, micro, q.seq_len, mixed, graphs);
  }
  return m;
}

MemoryBreakdown predict_peak_memory(const ModelConfig& c, const ParallelConfig& p,
                                    const MemoryQuery& q, const std::vector<StageParameters>& given) {
  const std::vector<StageParameters> stages =
      given.empty() ? stage_parameters(c, p.pp, p.tp, q.seq_len) : given;
  MemoryBreakdown best;
  for (int stage = 0; stage < p.pp; ++stage)
    for (int dp_rank : {0, p.dp - 1}) {
      MemoryBreakdown m = predict_rank_memory(c, p, q, stage, dp_rank, stages);
      if (m.total() > best.total()) best = m;
    }
  return best;
}

}  // namespace vacc
