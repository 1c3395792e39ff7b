#include "vacc/runtime/profile_measure.h"

#include "vacc/core/median.h"
#include "vacc/core/strprintf.h"

#include <algorithm>
#include <array>
#include <functional>
#include <chrono>
#include <cmath>
#include <cstdio>

namespace vacc {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Times `op` (which must leave the device idle when it returns, e.g. by synchronizing): two
// warm-ups, then repetitions, each started after a barrier so the ranks contend as in a
// training step. A barrier lets the ranks go up to a scheduler tick apart (its waits sleep),
// so a repetition is several calls: a device measurement (no communication inside) calls `op`
// until `rep_seconds` have passed, so every rank computes for the whole repetition; a
// collective (every rank must make the same calls) makes the same number of calls on every
// rank, enough for `rep_seconds` at the warm-up's speed, at most 64. As many repetitions as
// fill `min_seconds` on the slowest rank (3 to 25, the same count on every rank); the median
// repetition of this rank, per call.
double time_repeated(Communicator& comm, double min_seconds, double rep_seconds, bool collective,
                     const std::function<void()>& op) {
  comm.barrier();
  op();
  auto t0 = Clock::now();
  op();
  const double warm = std::max(max_over_ranks(comm, seconds_since(t0)), 1e-7);
  const int inner = std::clamp(int(std::ceil(rep_seconds / warm)), 1, 64);
  const int reps = std::clamp(int(std::ceil(min_seconds / std::max(warm * inner, rep_seconds))), 3, 25);
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    comm.barrier();
    t0 = Clock::now();
    int calls = 0;
    double elapsed = 0;
    do {
      op();
      ++calls;
      elapsed = seconds_since(t0);
    } while (collective ? calls < inner : elapsed < rep_seconds);
    times.push_back(elapsed / calls);
  }
  return median(times);
}

// A device measurement: the median over ranks of each rank's median time.
double device_time(Communicator& comm, double min_seconds, double rep_seconds,
                   const std::function<void()>& op) {
  return median(gather_host(comm, time_repeated(comm, min_seconds, rep_seconds, false, op)));
}

struct Shapes {
  std::vector<std::array<int64_t, 3>> matmul;
  int64_t stream = 0, rows = 0, hidden = 0, ffn = 0, adam = 0, vocab = 0;
  AttentionShape attention;
  double min_seconds = 0, rep_seconds = 0;
};

Shapes shapes_for(const ProfileMeasureOptions& o) {
  Shapes s;
#ifdef VACC_SIM_PROFILE_SHAPES
  // The CPU simulator's build of vacc (tests/unit_cuda): its products and kernels are plain
  // loops, so a simulated GPU is profiled on small shapes (the command's flow, not figures).
  if (o.gpu) {
    for (int64_t m : {16, 32, 64})
      for (auto [n, k] : {std::pair<int64_t, int64_t>{64, 64}, {128, 64}})
        s.matmul.push_back({m, n, k});
    s.matmul.push_back({8, 8, 8});
    s.stream = int64_t(1) << 14;
    s.rows = 64, s.hidden = 64, s.ffn = 128, s.adam = int64_t(1) << 14, s.vocab = 256;
    s.attention = {1, 64, 2, 1, 64};
    s.min_seconds = 0.01, s.rep_seconds = 0.005;
    return s;
  }
#endif
  if (o.gpu) {
    // A micro-batch of 1024-8192 tokens through a 0.5B model's widths (896, 1152 = qkv, 4864,
    // 9728 = gate_up), and squares up to the size that reaches a GPU's peak.
    for (int64_t m : o.quick ? std::vector<int64_t>{8192} : std::vector<int64_t>{1024, 4096, 8192})
      for (auto [n, k] : {std::pair<int64_t, int64_t>{896, 896}, {1152, 896}, {9728, 896},
                          {896, 4864}, {4096, 4096}, {8192, 8192}})
        s.matmul.push_back({m, n, k});
    for (int64_t e : {256, 1024, 2048}) s.matmul.push_back({e, e, e});
    s.stream = int64_t(256) << 20;  // 1 GiB per buffer
    s.rows = 8192, s.hidden = 896, s.ffn = 4864, s.adam = int64_t(256) << 20, s.vocab = 151936;
    s.attention = {8, 1024, 14, 2, 64};
    s.min_seconds = o.quick ? 0.05 : 0.3, s.rep_seconds = 0.01;
  } else if (o.quick) {
    for (int64_t m : {256, 1024})
      for (auto [n, k] : {std::pair<int64_t, int64_t>{512, 512}, {1024, 1024}, {2048, 2048}})
        s.matmul.push_back({m, n, k});
    s.matmul.push_back({128, 128, 128});
    s.stream = int64_t(8) << 20;  // floats: 32 MiB per buffer
    s.rows = 1024, s.hidden = 1024, s.ffn = 2816, s.adam = int64_t(4) << 20, s.vocab = 2048;
    s.attention = {1, 512, 8, 8, 64};
    s.min_seconds = 0.05, s.rep_seconds = 0.01;
  } else {
    // A transformer's products: rows (tokens of a micro-batch) x widths (hidden, ffn, qkv).
    for (int64_t m : {256, 512, 1024, 2048})
      for (auto [n, k] : {std::pair<int64_t, int64_t>{512, 512}, {1024, 1024}, {2048, 2048},
                          {4096, 1024}, {1024, 4096}})
        s.matmul.push_back({m, n, k});
    for (int64_t e : {64, 128, 256}) s.matmul.push_back({e, e, e});
    // Thin products: a small model's layers and tensor-parallel shards (k or n of 64-256).
    for (int64_t m : {256, 1024})
      for (auto [n, k] : {std::pair<int64_t, int64_t>{256, 64}, {64, 256}, {512, 128}, {256, 704}})
        s.matmul.push_back({m, n, k});
    s.stream = int64_t(32) << 20;  // 128 MiB per buffer
    s.rows = 2048, s.hidden = 1024, s.ffn = 2816, s.adam = int64_t(16) << 20, s.vocab = 8192;
    s.attention = {1, 1024, 8, 8, 64};
    s.min_seconds = 0.5, s.rep_seconds = 0.04;
  }
  return s;
}

std::vector<int64_t> message_sizes(const ProfileMeasureOptions& o) {
  if (o.quick) return {4 << 10, 16 << 10, 1 << 20, 8 << 20};
  return {4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20};
}

void say(const ProfileMeasureOptions& o, int& done, int total, const std::string& line) {
  ++done;
  if (!o.progress) return;
  // Appended, not "[" + ...: GCC 12 warns falsely (-Wrestrict) on operator+(const char*, string&&).
  std::string text(1, '[');
  text.append(std::to_string(done)).append("/").append(std::to_string(total)).append("] ").append(line);
  o.progress(text);
}


}  // namespace

int device_measurement_count(const ProfileMeasureOptions& o) {
  // stream, rmsnorm x2, swiglu x2, adamw, attention, classifier
  return int(shapes_for(o).matmul.size()) + 8;
}

int link_measurement_count(const ProfileMeasureOptions& o, int ranks) {
  if (ranks < 2) return 0;
  return (3 * (ranks - 1) + 1) * int(message_sizes(o).size());
}

DeviceMeasurements measure_device(Backend& be, Communicator& comm, const ProfileMeasureOptions& o) {
  const Shapes s = shapes_for(o);
  const int total = device_measurement_count(o) + link_measurement_count(o, comm.size());
  int done = 0;
  DeviceMeasurements out;
  const auto B = MemoryCategory::Buffers;

  for (const auto& [m, n, k] : s.matmul) {
    Tensor a = be.empty({m, k}, o.dtype, B, "profile a");
    Tensor b = be.empty({n, k}, o.dtype, B, "profile b");
    Tensor c = be.empty({m, n}, DType::F32, B, "profile c");
    be.fill(a, 0.5f);
    be.fill(b, 0.25f);
    const double t = device_time(comm, s.min_seconds, s.rep_seconds, [&] {
      be.matmul(a, false, b, true, c);
      be.synchronize();
    });
    out.matmul.push_back({double(m), double(n), double(k), t});
    say(o, done, total,
        strprintf("matmul %.0f x %.0f x %.0f: %.1f GFLOP/s", double(m), double(n), double(k),
            2.0 * double(m) * double(n) * double(k) / t / 1e9));
  }

  auto kernel = [&](const std::string& name, const std::string& shape, double bytes, double flops,
                    const std::function<void()>& op) {
    const double t = device_time(comm, s.min_seconds, s.rep_seconds, [&] {
      op();
      be.synchronize();
    });
    out.kernels.push_back({name, shape, bytes, flops, t});
    say(o, done, total,
        name + " (" + shape + "): " +
            (flops > 0 ? strprintf("%.1f GFLOP/s", flops / t / 1e9) : strprintf("%.1f GB/s", bytes / t / 1e9)));
  };
  {
    Tensor a = be.empty({s.stream}, DType::F32, B, "stream a");
    Tensor b = be.empty({s.stream}, DType::F32, B, "stream b");
    Tensor c = be.empty({s.stream}, DType::F32, B, "stream c");
    be.fill(a, 1.0f);
    be.fill(b, 2.0f);
    be.fill(c, 0.0f);
    kernel("stream_add", strprintf("%.0f MiB x 3", double(s.stream) * 4 / (1 << 20)),
           12.0 * double(s.stream), 0, [&] { be.add(a, b, c); });
  }
  {
    const int64_t N = s.rows, C = s.hidden, F = s.ffn;
    const std::string nc = "N=" + std::to_string(N) + " C=" + std::to_string(C);
    const std::string nf = "N=" + std::to_string(N) + " F=" + std::to_string(F);
    Tensor x = be.empty({N, C}, DType::F32, B, "x");
    Tensor w = be.empty({C}, DType::F32, B, "w");
    Tensor y = be.empty({N, C}, DType::F32, B, "y");
    Tensor rstd = be.empty({N}, DType::F32, B, "rstd");
    Tensor dx = be.empty({N, C}, DType::F32, B, "dx");
    Tensor dw = be.zeros({C}, DType::F32, B, "dw");
    be.fill(x, 0.5f);
    be.fill(w, 1.0f);
    const double nc4 = double(N * C) * 4;
    kernel("rmsnorm_forward", nc, 2 * nc4, 0, [&] { be.rmsnorm_forward(x, w, 1e-6f, y, rstd); });
    kernel("rmsnorm_backward", nc, 3 * nc4, 0,
           [&] { be.rmsnorm_backward(y, x, w, rstd, nullptr, dx, nullptr, dw); });
    Tensor gu = be.empty({N, 2 * F}, DType::F32, B, "gate_up");
    Tensor h = be.empty({N, F}, DType::F32, B, "h");
    Tensor dgu = be.empty({N, 2 * F}, DType::F32, B, "dgate_up");
    be.fill(gu, 0.5f);
    const double nf4 = double(N * F) * 4;
    kernel("swiglu_forward", nf, 3 * nf4, 0, [&] { be.swiglu_forward(gu, h); });
    kernel("swiglu_backward", nf, 5 * nf4, 0, [&] { be.swiglu_backward(h, gu, dgu); });
  }
  {
    const int64_t P = s.adam;
    Tensor p = be.empty({P}, DType::F32, B, "param");
    Tensor g = be.empty({P}, DType::F32, B, "grad");
    Tensor m = be.zeros({P}, DType::F32, B, "m");
    Tensor v = be.zeros({P}, DType::F32, B, "v");
    be.fill(p, 1.0f);
    be.fill(g, 1e-3f);
    AdamWParams ap;
    kernel("adamw", "P=" + std::to_string(P), 7.0 * 4 * double(P), 0, [&] {
      be.adamw_step(p, g, m, v, ap);
      ++ap.step;
    });
  }
  {
    AttentionShape a = s.attention;
    a.compute = o.dtype;  // the route training in this precision takes (a GPU's bf16 one)
    const int64_t T = a.batch * a.seq;
    Tensor qkv = be.empty({T, a.qkv_width()}, DType::F32, B, "qkv");
    Tensor att = be.empty({T, a.q_heads * a.head_dim}, DType::F32, B, "att");
    Tensor lse = be.empty({a.batch, a.q_heads, a.seq}, DType::F32, B, "lse");
    Tensor dqkv = be.empty({T, a.qkv_width()}, DType::F32, B, "dqkv");
    be.fill(qkv, 0.1f);
    // The cost model's count: forward 2 products of S x S x D per head and sequence,
    // backward twice forward.
    const double flops = 3.0 * double(a.batch * a.q_heads) * 2 *
                         (2.0 * double(a.seq) * double(a.seq) * double(a.head_dim));
    kernel("attention", "B=" + std::to_string(a.batch) + " S=" + std::to_string(a.seq) +
                            " heads=" + std::to_string(a.q_heads) + " D=" + std::to_string(a.head_dim) +
                            " fwd+bwd",
           0, flops, [&] {
             be.attention_forward(qkv, a, att, lse, nullptr);
             be.attention_backward(att, qkv, att, lse, a, dqkv);
           });
    out.attention = {a, out.kernels.back().seconds};
  }
  {
    // The training path's output head: logits, loss, dx and dweight in one fused call.
    const int64_t N = s.rows / 2, V = s.vocab, C = s.hidden;
    Tensor x = be.empty({N, C}, o.dtype, B, "classifier x");
    Tensor w = be.empty({V, C}, o.dtype, B, "classifier weight");
    Tensor labels = be.empty({N}, DType::I32, B, "classifier labels");
    Tensor loss = be.zeros({1}, DType::F32, B, "classifier loss");
    // dx is f32 in mixed precision too, as the model's.
    Tensor dx = be.empty({N, C}, DType::F32, B, "classifier dx");
    Tensor dw = be.zeros({V, C}, DType::F32, B, "classifier dweight");
    be.fill(x, 0.01f);
    be.fill(w, 0.01f);
    std::vector<int32_t> ids(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) ids[size_t(i)] = int32_t((i * 7919) % V);
    be.upload(ids.data(), labels);
    kernel("classifier", "N=" + std::to_string(N) + " V=" + std::to_string(V) + " C=" + std::to_string(C) +
                             " loss+dx+dweight",
           0, 6.0 * double(N) * double(V) * double(C),
           [&] { be.classifier_cross_entropy(x, w, labels, 1.0f, loss, &dx, &dw); });
    out.classifier = {N, V, C, out.kernels.back().seconds};
  }
  return out;
}

std::vector<SyncSample> measure_sync(Backend& be, Communicator& comm,
                                     const ProfileMeasureOptions& o) {
  std::vector<SyncSample> out;
  if (comm.size() < 2) return out;
  const auto B = MemoryCategory::Buffers;
  const int64_t widest = 512;
  Tensor a = be.empty({widest, 512}, o.dtype, B, "sync a");
  Tensor b = be.empty({512, 512}, o.dtype, B, "sync b");
  Tensor c = be.empty({widest, 512}, DType::F32, B, "sync c");
  Tensor message = be.zeros({4096}, DType::F32, B, "sync message");
  be.fill(a, 0.5f);
  be.fill(b, 0.25f);
  std::vector<int> sizes;
  std::vector<std::unique_ptr<Communicator>> groups;  // this rank's group of each size
  for (int g = 2; g <= comm.size(); ++g) {
    if (comm.size() % g != 0) continue;
    sizes.push_back(g);
    groups.push_back(comm.split(comm.rank() / g, comm.rank()));
  }
  const double min_seconds = o.quick ? 0.1 : 0.3, rep = o.quick ? 0.02 : 0.05;
  for (int64_t rows : {int64_t(32), int64_t(128), widest}) {
    Tensor a_rows = a.view(0, {rows, 512});
    Tensor c_rows = c.view(0, {rows, 512});
    auto product = [&] {
      be.matmul(a_rows, false, b, true, c_rows);
      be.synchronize();
    };
    // The difference of three timings swings with the scheduler (0 to 1.4 ms on cpu-8 in
    // single rounds): the median of several rounds, each timing the three back to back.
    std::vector<double> alone;
    std::vector<std::vector<double>> rounds(sizes.size());
    for (int round = 0; round < (o.quick ? 1 : 5); ++round) {
      alone.push_back(max_over_ranks(comm, time_repeated(comm, min_seconds, rep, false, product)));
      for (size_t i = 0; i < sizes.size(); ++i) {
        Communicator& group = *groups[i];
        // Timed over the whole job (its barriers), so every group runs at once.
        const double reduce = max_over_ranks(
            comm, time_repeated(comm, min_seconds, rep, true, [&] { group.all_reduce(message); }));
        const double both = max_over_ranks(comm, time_repeated(comm, min_seconds, rep, true, [&] {
          product();
          group.all_reduce(message);
        }));
        rounds[i].push_back(std::max(0.0, both - alone.back() - reduce));
      }
    }
    for (size_t i = 0; i < sizes.size(); ++i)
      out.push_back({sizes[i], median(alone), median(rounds[i])});
  }
  std::sort(out.begin(), out.end(), [](const SyncSample& x, const SyncSample& y) {
    return x.ranks != y.ranks ? x.ranks < y.ranks : x.compute_s < y.compute_s;
  });
  return out;
}

std::vector<CollectiveSample> measure_links(Backend& be, Communicator& comm,
                                            const ProfileMeasureOptions& o) {
  std::vector<CollectiveSample> out;
  if (comm.size() < 2) return out;
  const std::vector<int64_t> sizes = message_sizes(o);
  const int total = device_measurement_count(o) + link_measurement_count(o, comm.size());
  int done = device_measurement_count(o);
  const double min_seconds = o.quick ? 0.02 : 0.25;
  const auto B = MemoryCategory::Buffers;
  const int64_t largest = sizes.back() / 4;
  Tensor buf = be.zeros({largest}, DType::F32, B, "link buffer");
  Tensor other = be.zeros({largest}, DType::F32, B, "link buffer 2");

  for (int n = 2; n <= comm.size(); ++n) {
    std::unique_ptr<Communicator> group = comm.split(comm.rank() < n ? 0 : -1, comm.rank());
    for (CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::ReduceScatter,
                            CollectiveOp::AllGather, CollectiveOp::SendRecv}) {
      if (op == CollectiveOp::SendRecv && n != 2) continue;
      for (int64_t bytes : sizes) {
        const int64_t elems = bytes / 4;
        double t = 0;
        if (group) {
          std::vector<int64_t> counts(size_t(n), elems / n);
          for (int64_t i = 0; i < elems % n; ++i) ++counts[size_t(i)];
          Tensor whole = buf.view(0, {elems});
          Tensor whole2 = other.view(0, {elems});
          const int r = group->rank();
          Tensor part = other.view(0, {counts[size_t(r)]});
          const double median_t = time_repeated(*group, min_seconds, o.quick ? 0.01 : 0.03, true, [&] {
            switch (op) {
              case CollectiveOp::AllReduce: group->all_reduce(whole); break;
              case CollectiveOp::ReduceScatter: group->reduce_scatter(whole, part, counts); break;
              case CollectiveOp::AllGather:
                group->all_gather(part, whole, counts);
                break;
              case CollectiveOp::SendRecv:
                // A round trip, halved below.
                if (r == 0) {
                  group->send(whole, 1);
                  group->recv(whole2, 1);
                } else {
                  group->recv(whole2, 0);
                  group->send(whole, 0);
                }
                break;
            }
          });
          t = max_over_ranks(*group, median_t);
          if (op == CollectiveOp::SendRecv) t /= 2;
        }
        // Ranks outside the group wait; every rank learns the group's time.
        t = max_over_ranks(comm, t);
        out.push_back({op, n, double(bytes), t});
        say(o, done, total,
            std::string(collective_name(op)) + " on " + std::to_string(n) + " ranks, " +
                strprintf("%.0f KiB: %.1f us (%.2f GB/s)", double(bytes) / 1024, t * 1e6,
                    double(bytes) / t / 1e9));
      }
    }
  }
  return out;
}

}  // namespace vacc
