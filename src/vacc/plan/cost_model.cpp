#include "vacc/plan/cost_model.h"

#include <algorithm>
#include <cstdio>

#include "vacc/model/model_shard.h"
#include "vacc/plan/stage_split.h"

namespace vacc {
namespace {

constexpr double kF32 = 4.0;

// Bytes the element-wise kernels of one layer move for one micro-batch of N tokens (RMSNorm,
// RoPE, SwiGLU, the bias gradient, conversions), forward and backward; C the hidden size, W
// the qkv width, F the FFN size. In f32 every tensor is f32 and the backward moves twice the
// forward's bytes (measured on the CPU: docs/PLANNER.md, "Accuracy"). Mixed precision keeps the
// residual stream and its gradient in f32 but qkv, gate_up, SwiGLU's output and the norms'
// outputs in bf16, and its backward moves more than twice its forward: per layer, forward
// 2 x RMSNorm (f32 in, bf16 out: 6 N C each), the attention output's bf16 copy (2 N C, written
// by the attention kernel; Hq D taken as C), RoPE in place on bf16 (4 N W), SwiGLU (bf16 in
// and out: 6 N F); backward 2 x RMSNorm (f32 dy, x and residual gradient in, f32 dx and its
// bf16 copy out: 18 N C each), a conversion to bf16 (6 N C: the top layer's dy, counted in
// every layer), RoPE on the f32 gradient, in place with a bf16 copy (10 N W), or with a qkv
// bias, reading it once for the bf16 copy and the bias gradient (6 N W), SwiGLU (10 N F).
// With the f32 rule the 0.5B model's bf16 step on an H100 predicted 4x its element-wise time
// (46 ms of 75).
struct ElementwiseBytes {
  double forward = 0, backward = 0;
};
ElementwiseBytes layer_elementwise_bytes(double N, double C, double W, double F, DType dt,
                                         bool qkv_bias) {
  if (dt == DType::BF16)
    return {14 * N * C + 4 * N * W + 6 * N * F,
            42 * N * C + (qkv_bias ? 6 : 10) * N * W + 10 * N * F};
  const double forward = (12 * N * C + 4 * N * W + 6 * N * F) * kF32;
  return {forward, 2 * forward};
}

struct StageShape {
  double layers = 0, q_heads = 0, kv_heads = 0, ffn = 0, vocab = 0;
  bool embedding = false, head = false;
  double parameters = 0, largest_group = 0;
};

StageShape stage_shape(const ModelConfig& c, const ParallelConfig& p, int64_t begin, int64_t end,
                       int stage) {
  const ModelShard s =
      ModelShard::tensor_parallel(c, begin, end, stage == 0, stage == p.pp - 1, 0, p.tp);
  StageShape out;
  out.layers = double(s.num_layers());
  out.q_heads = double(s.q_heads);
  out.kv_heads = double(s.kv_heads);
  out.ffn = double(s.ffn_size);
  out.vocab = double(s.vocab_size);
  out.embedding = s.has_embedding;
  out.head = s.has_head;
  const double C = double(c.hidden_size), D = double(c.head_dim);
  const double W = (out.q_heads + 2 * out.kv_heads) * D;
  double layer = C * W + out.q_heads * D * C + 3 * C * out.ffn + 2 * C;
  if (c.attention_bias) layer += W;
  out.largest_group = layer;
  out.parameters = out.layers * layer;
  const double table = out.vocab * C;
  if (out.embedding) out.parameters += table;
  if (out.head) out.parameters += C + (c.tie_word_embeddings && out.embedding ? 0 : table);
  return out;
}

}  // namespace

double LinkSpec::sync_for(int ranks, double compute) const {
  if (sync_points.empty()) return sync;
  int size = sync_points.front().ranks;
  for (const SyncPoint& p : sync_points)
    if (p.ranks <= ranks) size = p.ranks;
  double x0 = 0, y0 = 0;  // no compute between collectives: the ranks are still together
  for (const SyncPoint& p : sync_points) {
    if (p.ranks != size) continue;
    if (compute <= p.compute)
      return p.compute > x0 ? y0 + (p.seconds - y0) * (compute - x0) / (p.compute - x0) : p.seconds;
    x0 = p.compute, y0 = p.seconds;
  }
  return y0;
}

double ring_all_reduce_seconds(double bytes, int n, const LinkSpec& link, double compute) {
  if (n <= 1 || bytes <= 0) return 0;
  const LinkSpec::Measured l = link_for(link, link.all_reduce);
  return link.sync_for(n, compute) + 2.0 * (n - 1) * l.latency +
         2.0 * (n - 1) / n * bytes / l.bandwidth;
}

// One pass around the ring (all-gather, reduce-scatter): n - 1 steps of bytes / n each.
static double ring_pass_seconds(double bytes, int n, const LinkSpec& link,
                                const LinkSpec::Measured& op, double compute) {
  if (n <= 1 || bytes <= 0) return 0;
  const LinkSpec::Measured l = link_for(link, op);
  return link.sync_for(n, compute) + (n - 1) * l.latency + double(n - 1) / n * bytes / l.bandwidth;
}

double ring_all_gather_seconds(double bytes, int n, const LinkSpec& link, double compute) {
  return ring_pass_seconds(bytes, n, link, link.all_gather, compute);
}

double ring_reduce_scatter_seconds(double bytes, int n, const LinkSpec& link, double compute) {
  return ring_pass_seconds(bytes, n, link, link.reduce_scatter, compute);
}

double send_seconds(double bytes, const LinkSpec& link, double compute) {
  const LinkSpec::Measured l = link_for(link, link.send);
  return link.sync_for(2, compute) + l.latency + bytes / l.bandwidth;
}

const LinkSpec& group_link(const ClusterSpec& cluster, int stride, int size) {
  return int64_t(stride) * size > cluster.devices_per_node ? cluster.inter_node : cluster.intra_node;
}

std::string CostBreakdown::str() const {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%.4g s (pipeline %.4g s of which bubble %.4g s; slowest stage: compute %.4g s, "
                "tp %.4g s, p2p %.4g s, zero-3 gathers %.4g s; dp reduction %.4g s, exposed "
                "%.4g s; parameter gather %.4g s; optimizer %.4g s)",
                step_s, pipeline_s, bubble_s, compute_s, tp_comm_s, p2p_comm_s, zero_gather_s,
                dp_comm_s, dp_exposed_s, param_gather_s, optimizer_s);
  return buf;
}

double classifier_logit_bytes(DType dtype) { return dtype == DType::BF16 ? 4 * 2.0 : 3 * kF32; }

CostBreakdown predict_step_time(const ModelConfig& c, const ParallelConfig& p,
                                const CostQuery& q, const ClusterSpec& cluster) {
  const DeviceProfile& dev = cluster.profile;
  const DType dt = q.dtype;
  const double cb = dt == DType::BF16 ? 2.0 : 4.0;
  const int64_t micro = q.global_batch / p.dp / p.micro_batches;
  const double M = double(p.micro_batches);
  const double S = double(q.seq_len), N = double(micro) * S;
  const double C = double(c.hidden_size), D = double(c.head_dim);
  const LinkSpec& tp_link = group_link(cluster, 1, p.tp);
  const LinkSpec& dp_link = group_link(cluster, p.tp, p.dp);
  const LinkSpec& pp_link = group_link(cluster, p.tp * p.dp, p.pp);

  CostBreakdown out;
  out.model_flops = c.training_flops(q.global_batch * q.seq_len, q.global_batch * q.seq_len, q.seq_len);
  const auto ranges = split_layers(c, p.pp, q.seq_len);
  struct StageCost {
    double compute = 0, backward = 0, tp = 0, p2p = 0, gather = 0, micro = 0;
    double dp = 0, dp_exposed = 0, param_gather = 0, optimizer = 0;
  };
  std::vector<StageCost> stages(size_t(p.pp));
  for (int s = 0; s < p.pp; ++s) {
    const StageShape sh = stage_shape(c, p, ranges[size_t(s)].first, ranges[size_t(s)].second, s);
    StageCost& st = stages[size_t(s)];
    const double hq = sh.q_heads, hkv = sh.kv_heads, F = sh.ffn, W = (hq + 2 * hkv) * D;
    // One layer, forward, one micro-batch.
    const double qkv = dev.matmul_seconds(dt, N, W, C);
    const double core = double(micro) * hq * dev.attention_factor *
                        (dev.matmul_seconds(dt, S, S, D) + dev.matmul_seconds(dt, S, D, S));
    const double rest = dev.matmul_seconds(dt, N, C, hq * D) + dev.matmul_seconds(dt, N, 2 * F, C) +
                        dev.matmul_seconds(dt, N, C, F);
    const ElementwiseBytes elementwise =
        layer_elementwise_bytes(N, C, W, F, dt, c.attention_bias);
    const double products = qkv + core + rest;
    const double fwd = products + dev.elementwise_seconds(elementwise.forward);
    double recompute = 0;
    if (p.recompute == Recompute::Full) recompute = fwd;
    if (p.recompute == Recompute::Selective) recompute = qkv + core;
    double layer_fwd = sh.layers * fwd;
    double layer_bwd =
        sh.layers * (2 * products + dev.elementwise_seconds(elementwise.backward) + recompute);
    if (sh.head) {
      // The fused classifier: its logits (forward), dx and dweight (backward) and the
      // cross-entropy's traffic over the logits, at the profile's measured factor, which
      // `vacc profile` fits to the three products plus that traffic once (one fused call
      // computes the loss and the logits' gradient). Vocabulary-parallel (tp > 1) it runs the
      // logits twice: the log-sum-exp forward, recomputed with its traffic in backward.
      const double head = dev.classifier_factor * dev.matmul_seconds(dt, N, sh.vocab, C);
      const double ce = dev.classifier_factor *
                        dev.elementwise_seconds(classifier_logit_bytes(dt) * N * sh.vocab);
      layer_fwd += head + ce;
      layer_bwd += p.tp > 1 ? 3 * head + ce : 2 * head;
    }
    st.compute = layer_fwd + layer_bwd;
    st.backward = layer_bwd;
    // Tensor parallelism: 2 all-reduces forward and 2 backward per layer (not overlapped), 2
    // more when full recomputation reruns the layer's forward, and the vocabulary-parallel
    // loss's small ones.
    // A collective's synchronisation cost grows with the compute since the previous one:
    // with tp, the stage's compute spread over its tp collectives (the other collectives fall
    // between them); without, the work before each (a stage's pass, a layer's backward).
    const double tp_reductions = p.recompute == Recompute::Full ? 6 : 4;
    const double tp_collectives = sh.layers * tp_reductions + (sh.head ? 3 : 0);
    const double tp_chunk = p.tp > 1 && tp_collectives > 0 ? st.compute / tp_collectives : 0.0;
    auto chunk = [&](double without_tp) { return p.tp > 1 ? tp_chunk : without_tp; };
    st.tp = sh.layers * tp_reductions * ring_all_reduce_seconds(N * C * cb, p.tp, tp_link, tp_chunk);
    if (sh.head) st.tp += 3 * ring_all_reduce_seconds(N * kF32, p.tp, tp_link, tp_chunk);
    // Pipeline sends: activations in, their gradient back.
    const double hop = p.pp > 1 ? send_seconds(N * C * kF32, pp_link, chunk(st.compute / 2)) : 0.0;
    st.p2p = (s > 0 ? hop : 0.0) + (s < p.pp - 1 ? hop : 0.0);
    double busy = st.compute + st.tp;
    // ZeRO-3: the stage's parameters gathered for forward and again for backward, prefetched
    // a group ahead (hidden behind compute but for the first group).
    const double P = sh.parameters;
    // ZeRO's gathers and gradient buckets are one collective per parameter group (each
    // layer, the embedding, the head): the ring functions charge `sync` once, the rest here.
    const double groups = sh.layers + (sh.embedding ? 1 : 0) + (sh.head ? 1 : 0);
    const double bucket_chunk = chunk(st.backward / groups), gather_chunk = chunk(st.compute / (2 * groups));
    const double dp_sync = p.dp > 1 ? (groups - 1) * dp_link.sync_for(p.dp, bucket_chunk) : 0.0;
    if (p.zero >= 3 && p.dp > 1) {
      const double gather_sync = (groups - 1) * dp_link.sync_for(p.dp, gather_chunk);
      st.gather = 2 * (ring_all_gather_seconds(P * kF32, p.dp, dp_link, gather_chunk) + gather_sync);
      const double first = st.gather * sh.largest_group / std::max(P, 1.0);
      busy = dev.overlaps_communication ? std::max(busy, st.gather) + first : busy + st.gather;
    }
    st.micro = busy + st.p2p;
    // AdamW over the owned parameters: master, gradient, two moments (read + write), plus the
    // compute copy under bf16.
    const double owned = p.zero >= 1 ? P / p.dp : P;
    st.optimizer = dev.optimizer_seconds(owned * (7 * kF32 + (dt == DType::BF16 ? 2.0 : 0.0)));
    // Gradient reduction over dp: once, in the last micro-batch (ZeRO 0: all-reduce; 1:
    // reduce-scatter) overlapped with its backward, or a reduce-scatter per micro-batch (ZeRO 2/3) overlapped with
    // each backward; the last bucket (a layer's gradients) is never hidden.
    if (p.dp > 1) {
      const double bytes = P * kF32;
      const double last_bucket_share = sh.largest_group / std::max(P, 1.0);
      if (p.zero >= 2) {
        const double rs = ring_reduce_scatter_seconds(bytes, p.dp, dp_link, bucket_chunk) + dp_sync;
        st.dp = M * rs;
        st.dp_exposed = dev.overlaps_communication
                            ? M * std::max(rs - st.backward, rs * last_bucket_share)
                            : st.dp;
      } else {
        // ZeRO 0: all-reduce; ZeRO 1: reduce-scatter into the shard (then the all-gather of
        // the updated parameters below).
        const double once =
            dp_sync + (p.zero == 0 ? ring_all_reduce_seconds(bytes, p.dp, dp_link, bucket_chunk)
                                   : ring_reduce_scatter_seconds(bytes, p.dp, dp_link, bucket_chunk));
        st.dp = once;
        st.dp_exposed = dev.overlaps_communication
                            ? std::max(once - st.backward, once * last_bucket_share)
                            : once;
      }
      if (p.zero >= 1 && p.zero <= 2)
        st.param_gather = ring_all_gather_seconds(P * kF32, p.dp, dp_link, st.optimizer);
    }
    out.stage_time_s.push_back(st.micro);
  }

  double sum = 0, slowest = 0;
  size_t worst = 0;
  for (size_t s = 0; s < stages.size(); ++s) {
    sum += stages[s].micro;
    if (stages[s].micro > slowest) slowest = stages[s].micro, worst = s;
  }
  out.pipeline_s = sum + (M - 1) * slowest;
  out.bubble_s = out.pipeline_s - M * slowest;
  const StageCost& w = stages[worst];
  out.compute_s = M * w.compute;
  out.tp_comm_s = M * w.tp;
  out.p2p_comm_s = M * w.p2p;
  out.zero_gather_s = M * w.gather;
  double tail = 0;
  for (const StageCost& st : stages) {
    const double t = st.dp_exposed + st.param_gather + st.optimizer;
    if (t > tail) {
      tail = t;
      out.dp_comm_s = st.dp;
      out.dp_exposed_s = st.dp_exposed;
      out.param_gather_s = st.param_gather;
      out.optimizer_s = st.optimizer;
    }
  }
  out.step_s = out.pipeline_s + tail;
  return out;
}

}  // namespace vacc
