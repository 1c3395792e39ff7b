// `vacc profile`'s fits against synthetic measurements worked out by hand, the measured
// profile's schema (what the planner reads back), and the cost model's use of the measured
// kernel figures.
#include <gtest/gtest.h>

#include <cmath>

#include "vacc/core/error.h"
#include "vacc/plan/cost_model.h"
#include "vacc/plan/measured_profile.h"
#include "vacc/plan/profile_fit.h"

namespace vacc {
namespace {

TEST(ProfileFit, LineThroughExactPoints) {
  // y = 3x + 2 exactly.
  const LineFit f = fit_line_relative({1, 10, 100, 1000}, {5, 32, 302, 3002});
  EXPECT_NEAR(f.slope, 3, 1e-9);
  EXPECT_NEAR(f.intercept, 2, 1e-9);
  EXPECT_NEAR(f.rms_relative_error, 0, 1e-12);
}

TEST(ProfileFit, NegativeInterceptIsRefittedThroughTheOrigin) {
  // The free fit is y = 2x - 1; an intercept must not be negative, so y = a x with the
  // relative least squares a = sum(x/y) / sum(x^2/y^2): x/y = 1/3, 1/5 .. here by hand.
  const std::vector<double> x{2, 3, 5}, y{3, 5, 9};
  const LineFit f = fit_line_relative(x, y);
  EXPECT_EQ(f.intercept, 0);
  const double sxy = 2.0 / 3 + 3.0 / 5 + 5.0 / 9, sxx = 4.0 / 9 + 9.0 / 25 + 25.0 / 81;
  EXPECT_NEAR(f.slope, sxy / sxx, 1e-12);
}

TEST(ProfileFit, EfficiencyCurveFromHandComputedPoints) {
  // A device of peak 100 GFLOP/s that reaches half of it at w = 64^3: a product of w
  // multiply-adds takes 2 (w + H) / P seconds.
  const double P = 100e9, H = 64.0 * 64 * 64;
  std::vector<MatmulSample> s;
  for (double m : {64.0, 256.0, 1024.0})
    for (double n : {128.0, 2048.0}) s.push_back({m, n, 512, 2 * (m * n * 512 + H) / P});
  const EfficiencyFit f = fit_efficiency_curve(s);
  EXPECT_NEAR(f.peak_flops / P, 1, 1e-9);
  EXPECT_NEAR(f.half_work / H, 1, 1e-6);
  // Used as a profile (peak_efficiency 1), it gives back the times.
  DeviceProfile d;
  d.peak_fp32_flops = f.peak_flops;
  d.peak_efficiency = 1;
  d.half_work = f.half_work;
  for (const MatmulSample& x : s)
    EXPECT_NEAR(d.matmul_seconds(DType::F32, x.m, x.n, x.k) / x.seconds, 1, 1e-6);
  // 64^3 reaches half the peak.
  EXPECT_NEAR(d.efficiency(64, 64, 64), 0.5, 1e-6);
}

TEST(ProfileFit, EfficiencyCurveWithNoiseStaysClose) {
  const double P = 50e9, H = 1e6;
  std::vector<MatmulSample> s;
  int i = 0;
  for (double m : {256.0, 512.0, 1024.0, 2048.0})
    for (double n : {512.0, 1024.0, 4096.0}) {
      const double noise = 1 + 0.03 * ((i++ % 3) - 1);  // -3%, 0, +3%
      s.push_back({m, n, 1024, noise * 2 * (m * n * 1024 + H) / P});
    }
  const EfficiencyFit f = fit_efficiency_curve(s);
  EXPECT_NEAR(f.peak_flops / P, 1, 0.03);
  EXPECT_GT(f.rms_relative_error, 0.01);
  EXPECT_LT(f.rms_relative_error, 0.03);
}

TEST(ProfileFit, RingFactors) {
  EXPECT_EQ(collective_steps(CollectiveOp::AllReduce, 4), 6);
  EXPECT_NEAR(collective_traffic(CollectiveOp::AllReduce, 4), 1.5, 1e-15);
  EXPECT_EQ(collective_steps(CollectiveOp::AllGather, 4), 3);
  EXPECT_NEAR(collective_traffic(CollectiveOp::ReduceScatter, 4), 0.75, 1e-15);
  EXPECT_EQ(collective_steps(CollectiveOp::SendRecv, 2), 1);
  EXPECT_EQ(collective_traffic(CollectiveOp::SendRecv, 2), 1);
}

TEST(ProfileFit, AlphaBetaFromSyntheticCollectives) {
  // Samples made with the cost model's own ring formulas for alpha = 5 us, beta = 4 GB/s:
  // the fit must return exactly those, and predict every sample.
  const LinkSpec link{4e9, 5e-6};
  std::vector<CollectiveSample> s;
  for (int n : {2, 3, 4})
    for (double bytes : {4096.0, 65536.0, 1048576.0, 67108864.0}) {
      s.push_back({CollectiveOp::AllReduce, n, bytes, ring_all_reduce_seconds(bytes, n, link)});
      s.push_back({CollectiveOp::ReduceScatter, n, bytes, ring_reduce_scatter_seconds(bytes, n, link)});
      s.push_back({CollectiveOp::AllGather, n, bytes, ring_all_gather_seconds(bytes, n, link)});
      if (n == 2) s.push_back({CollectiveOp::SendRecv, 2, bytes, link.latency + bytes / link.bandwidth});
    }
  const LinkFit f = fit_link(s);
  EXPECT_NEAR(f.latency / 5e-6, 1, 1e-9);
  EXPECT_NEAR(f.bandwidth / 4e9, 1, 1e-9);
  EXPECT_NEAR(f.rms_relative_error, 0, 1e-9);
}

TEST(ProfileFit, AlphaBetaOfOneCollectiveByHand) {
  // An all-reduce on 2 ranks measured at 10 us for 4 KiB and 1010 us for 4 MB (4e6 bytes):
  // slope 1000 us / (4e6 - 4096) bytes, intercept the rest. As a link (2 steps, all the
  // bytes once): alpha = intercept / 2, beta = 1 / slope.
  const double b1 = 4096, b2 = 4e6, t1 = 10e-6, t2 = 1010e-6;
  const LineFit f = fit_line_relative({b1, b2}, {t1, t2});
  const double slope = (t2 - t1) / (b2 - b1), intercept = t1 - slope * b1;
  EXPECT_NEAR(f.slope / slope, 1, 1e-9);
  EXPECT_NEAR(f.intercept / intercept, 1, 1e-9);
  const LinkFit l = fit_link({{CollectiveOp::AllReduce, 2, b1, t1}, {CollectiveOp::AllReduce, 2, b2, t2}});
  EXPECT_NEAR(l.latency / (intercept / 2), 1, 1e-9);
  EXPECT_NEAR(l.bandwidth * slope, 1, 1e-9);
}

TEST(ProfileFit, AlphaBetaIgnoresAStepInTheMiddle) {
  // A communicator whose medium messages (64 and 256 KiB) pay an extra 2 ms (a protocol switch, a
  // sleeping wait): alpha still comes from the small messages and beta from the large ones.
  const LinkSpec link{2e9, 4e-6};
  std::vector<CollectiveSample> s;
  for (double bytes : {4096.0, 16384.0, 65536.0, 262144.0, 4194304.0, 16777216.0, 67108864.0}) {
    const double extra = bytes == 65536.0 || bytes == 262144.0 ? 2e-3 : 0.0;
    s.push_back({CollectiveOp::AllReduce, 2, bytes, ring_all_reduce_seconds(bytes, 2, link) + extra});
    s.push_back({CollectiveOp::SendRecv, 2, bytes, send_seconds(bytes, link) + extra});
  }
  const LinkFit f = fit_link(s);
  EXPECT_NEAR(f.latency / 4e-6, 1, 1e-6);
  EXPECT_NEAR(f.bandwidth / 2e9, 1, 1e-6);
  EXPECT_GT(f.rms_relative_error, 0.1);  // the step is not explained, and says so
}

TEST(ProfileFit, MeasuredCollectivesReachTheRings) {
  // A link whose all-reduce was measured slower than its other transfers.
  LinkSpec link{4e9, 5e-6};
  link.all_reduce = {1e9, 10e-6};
  EXPECT_NEAR(ring_all_reduce_seconds(1e6, 2, link), 2 * 10e-6 + 1e6 / 1e9, 1e-15);
  EXPECT_NEAR(ring_all_gather_seconds(1e6, 2, link), 5e-6 + 0.5e6 / 4e9, 1e-15);
  EXPECT_NEAR(send_seconds(1e6, link), 5e-6 + 1e6 / 4e9, 1e-15);
}

TEST(ProfileFit, BadInputIsAnError) {
  EXPECT_THROW(fit_line_relative({}, {}), Error);
  EXPECT_THROW(fit_line_relative({1, 2}, {1, 0}), Error);
  EXPECT_THROW(fit_link({{CollectiveOp::AllReduce, 1, 4096, 1e-5}}), Error);
}

nlohmann::json sample_document() {
  return {{"schema", "vacc-profile/1"},
          {"key", "cpu-2"},
          {"flavor", "cpu-2"},
          {"device_model", "CPU"},
          {"devices", 2},
          {"threads_per_device", 1},
          {"dtype", "f32"},
          {"measured_at", "2026-11-26T01:00:00Z"},
          {"device",
           {{"profile",
             {{"name", "CPU"}, {"peak_bf16_tflops", 0.05}, {"peak_fp32_tflops", 0.05},
              {"memory_gb", 12}, {"memory_bandwidth_gbytes_per_s", 8},
              {"elementwise_bandwidth_gbytes_per_s", 4}, {"optimizer_bandwidth_gbytes_per_s", 6},
              {"attention_factor", 2.5}, {"peak_efficiency", 1}, {"half_work", 1e6}}}}},
          {"links",
           {{"intra_node",
             {{"bandwidth_gbytes_per_s", 3},
              {"latency_us", 4},
              {"per_collective", {{"all_reduce", {{"bandwidth_gbytes_per_s", 1}, {"latency_us", 9}}}}}}}}}};
}

TEST(MeasuredProfile, ReadsTheSchema) {
  const MeasuredProfile p = MeasuredProfile::from_json(sample_document(), "cpu-2.json");
  EXPECT_EQ(p.flavor, "cpu-2");
  EXPECT_EQ(p.devices, 2);
  EXPECT_DOUBLE_EQ(p.device.peak_fp32_flops, 0.05e12);
  EXPECT_DOUBLE_EQ(p.device.elementwise_bandwidth, 4e9);
  EXPECT_DOUBLE_EQ(p.device.optimizer_bandwidth, 6e9);
  EXPECT_DOUBLE_EQ(p.device.attention_factor, 2.5);
  EXPECT_TRUE(p.has_link);
  EXPECT_DOUBLE_EQ(p.link.bandwidth, 3e9);
  EXPECT_NEAR(p.link.latency, 4e-6, 1e-18);
  EXPECT_DOUBLE_EQ(p.link.all_reduce.bandwidth, 1e9);
  EXPECT_NEAR(p.link.all_reduce.latency, 9e-6, 1e-18);
  EXPECT_EQ(p.link.send.bandwidth, 0);  // not measured: the link's figures
  EXPECT_TRUE(p.link.sync_points.empty());  // optional
  // Round trip of the device profile.
  const DeviceProfile back = DeviceProfile::from_json(p.device.to_json(), "x");
  EXPECT_DOUBLE_EQ(back.attention_factor, 2.5);
  EXPECT_DOUBLE_EQ(back.optimizer_bandwidth, 6e9);
}

TEST(MeasuredProfile, ErrorsNameTheFileAndField) {
  auto message = [](const nlohmann::json& j) {
    try {
      MeasuredProfile::from_json(j, "/home/u/.vacc/profiles/cpu-2.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  nlohmann::json j = sample_document();
  j.erase("measured_at");
  EXPECT_NE(message(j).find("cpu-2.json: a measured profile needs \"measured_at\""), std::string::npos)
      << message(j);
  j = sample_document();
  j["schema"] = "vacc-profile/9";
  EXPECT_NE(message(j).find("schema"), std::string::npos);
  j = sample_document();
  j["links"]["intra_node"]["bandwidth_gbytes_per_s"] = -1;
  EXPECT_NE(message(j).find("links.intra_node.bandwidth_gbytes_per_s"), std::string::npos) << message(j);
  j = sample_document();
  j["device"]["profile"]["peak_fp32_tflops"] = "fast";
  EXPECT_NE(message(j).find("peak_fp32_tflops"), std::string::npos);
  EXPECT_NE(message(nlohmann::json::array()).find("must be a JSON object"), std::string::npos);
  j = sample_document();
  j["links"]["intra_node"]["sync"] = {{{"ranks", 1.5}, {"compute_us", 10}, {"sync_us", 5}}};
  EXPECT_NE(message(j).find("sync[0].ranks\" must be a group size"), std::string::npos) << message(j);
  j["links"]["intra_node"]["sync"] = {{{"ranks", 2}, {"compute_us", 10}, {"sync_us", -5}}};
  EXPECT_NE(message(j).find("sync[0].sync_us\" must be a non-negative number"), std::string::npos)
      << message(j);
}

// The synchronisation cost by group size and compute between collectives reaches the link,
// sorted; a group takes the points of the largest measured size not above it, on a line from
// (0, 0) through them, flat after the last.
TEST(MeasuredProfile, SynchronisationByGroupSizeAndCompute) {
  nlohmann::json j = sample_document();
  j["links"]["intra_node"]["sync_us"] = 800;
  j["links"]["intra_node"]["sync"] = {{{"ranks", 8}, {"compute_us", 1000}, {"sync_us", 800}},
                                      {{"ranks", 2}, {"compute_us", 4000}, {"sync_us", 200}},
                                      {{"ranks", 2}, {"compute_us", 1000}, {"sync_us", 100}},
                                      {{"ranks", 4}, {"compute_us", 1000}, {"sync_us", 300}}};
  const LinkSpec link = MeasuredProfile::from_json(j, "cpu-8.json").link;
  ASSERT_EQ(link.sync_points.size(), 4u);
  EXPECT_EQ(link.sync_points[0].ranks, 2);
  EXPECT_NEAR(link.sync_points[0].compute, 1e-3, 1e-15);
  EXPECT_NEAR(link.sync_for(2, 0.5e-3), 50e-6, 1e-15);   // half-way to the first point
  EXPECT_NEAR(link.sync_for(2, 2.5e-3), 150e-6, 1e-15);  // between the two
  EXPECT_NEAR(link.sync_for(2, 9e-3), 200e-6, 1e-15);    // flat after the last
  EXPECT_NEAR(link.sync_for(2), 200e-6, 1e-15);          // compute unknown: the largest
  EXPECT_NEAR(link.sync_for(6, 1e-3), 300e-6, 1e-15);    // groups of 6: those of 4
  EXPECT_NEAR(link.sync_for(8, 1e-3), 800e-6, 1e-15);
  // Without points, every collective pays the one figure.
  LinkSpec whole;
  whole.sync = 800e-6;
  EXPECT_NEAR(whole.sync_for(2, 1e-6), 800e-6, 1e-15);
}

TEST(MeasuredProfile, KernelFiguresReachTheCostModel) {
  // The same device with element-wise and optimizer bandwidths of half its stream bandwidth
  // and an attention twice its curve: every one of those terms takes longer.
  ModelConfig c;
  c.vocab_size = 256, c.hidden_size = 64, c.intermediate_size = 128, c.num_layers = 2;
  c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 16;
  ClusterSpec k;
  k.profile = DeviceProfile::cpu(1e10, 1e9, 1e9);
  ParallelConfig p;
  const CostQuery q{4, 32, DType::F32};
  const CostBreakdown base = predict_step_time(c, p, q, k);
  ClusterSpec slow = k;
  slow.profile.optimizer_bandwidth = 0.5e9;
  EXPECT_NEAR(predict_step_time(c, p, q, slow).optimizer_s, 2 * base.optimizer_s, 1e-15);
  slow.profile.elementwise_bandwidth = 0.5e9;
  slow.profile.attention_factor = 2;
  EXPECT_GT(predict_step_time(c, p, q, slow).compute_s, base.compute_s);
}

}  // namespace
}  // namespace vacc
