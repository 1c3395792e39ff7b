// Device profiles: what the cost model knows of a device — dense matrix-product peaks by
// dtype, memory size and bandwidth, and how close to peak a matrix product of a given size
// gets. Built-in profiles come from datasheet peaks (H100-SXM, H200, A100-80GB, MI250,
// MI300X); "CPU" takes its peak from a measurement the caller passes. Any profile can be
// replaced or added from JSON (schema in docs/PLANNER.md).
//
// Efficiency curve: a product of m x n x k reaches
//     eff(m, n, k) = peak_efficiency * w / (w + half_work),   w = m * n * k
// of the datasheet peak: large products approach `peak_efficiency` (what tuned GEMM
// libraries reach), and a product of `half_work` multiply-adds reaches half of that (launch
// overhead and tile under-occupancy dominate small products).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "vacc/core/dtype.h"

namespace vacc {

struct DeviceProfile {
  std::string name;
  double peak_bf16_flops = 0;        // dense, FLOP/s
  double peak_fp32_flops = 0;        // dense, FLOP/s (no TF32)
  double memory_bytes = 0;           // device memory
  double memory_bandwidth = 0;       // bytes/s
  double peak_efficiency = 0.7;      // of peak, for large products
  double half_work = 512.0 * 512 * 512;  // m*n*k at which eff = peak_efficiency / 2
  // Measured refinements (`vacc profile`); the defaults leave the datasheet model as it was.
  double elementwise_bandwidth = 0;  // bytes/s of the element-wise kernels; 0: memory_bandwidth
  double optimizer_bandwidth = 0;    // bytes/s of the AdamW step; 0: memory_bandwidth
  double attention_factor = 1;       // the attention kernel's time / the curve's for its products
  // The fused classifier + cross-entropy's time (loss, dx, dweight) / the curve's for its three
  // products plus its element-wise traffic.
  double classifier_factor = 1;
  // Whether communication runs beside compute (GPUs: NCCL on its own stream / SMs). CPU ranks
  // progress MPI only while they wait in it, on the cores that compute: every collective and
  // ZeRO gather costs its whole time (measured: docs/PLANNER.md, "Accuracy").
  bool overlaps_communication = true;

  double peak_flops(DType dtype) const {
    return dtype == DType::BF16 ? peak_bf16_flops : peak_fp32_flops;
  }
  double efficiency(double m, double n, double k) const {
    const double w = m * n * k;
    return peak_efficiency * w / (w + half_work);
  }
  // Seconds of one (m x k) @ (k x n) product: 2*m*n*k FLOPs at the curve's throughput.
  double matmul_seconds(DType dtype, double m, double n, double k) const;
  // Seconds to stream `bytes` through device memory (element-wise ops, the optimizer).
  double memory_seconds(double bytes) const { return bytes / memory_bandwidth; }
  // The element-wise kernels (norms, activations, residuals, the loss) and the optimizer:
  // their measured bandwidth when the profile has one, else memory_bandwidth.
  double elementwise_seconds(double bytes) const {
    return bytes / (elementwise_bandwidth > 0 ? elementwise_bandwidth : memory_bandwidth);
  }
  double optimizer_seconds(double bytes) const {
    return bytes / (optimizer_bandwidth > 0 ? optimizer_bandwidth : memory_bandwidth);
  }

  // A CPU device whose measured peak (FLOP/s on a `measured_size`^3 product, any dtype, e.g.
  // runtime/device_peak.h's measure_matmul_peak) and memory are given; the curve is scaled so
  // that the measured size reaches exactly the measured throughput.
  // The same device running at `factor` of its speed (a busy or slow machine): peaks and
  // bandwidths scaled alike, the curve's shape kept.
  DeviceProfile scaled(double factor) const;

  static DeviceProfile cpu(double measured_flops, double memory_bytes,
                           double memory_bandwidth = 20e9, int64_t measured_size = 2048);

  // {"name": ..., "peak_bf16_tflops": ..., "peak_fp32_tflops": ..., "memory_gb": ...,
  //  "memory_bandwidth_gbytes_per_s": ..., "peak_efficiency": ..., "half_work": ...,
  //  optional "elementwise_bandwidth_gbytes_per_s", "optimizer_bandwidth_gbytes_per_s",
  //  "attention_factor"}; fields
  // left out keep the values of `base` (the built-in profile of the same name, if any).
  static DeviceProfile from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_json() const;
};

// The built-in profiles (datasheet peaks).
const std::vector<DeviceProfile>& builtin_profiles();
// A profile by name, first from `extra` (read from a profile file), then the built-ins;
// names compare case-insensitively. Throws vacc::Error listing the known names.
DeviceProfile find_profile(const std::string& name, const std::vector<DeviceProfile>& extra = {});
// Whether find_profile knows `name`.
bool has_profile(const std::string& name, const std::vector<DeviceProfile>& extra = {});

// The built-in profile of a GPU the CUDA driver names `device_name` ("NVIDIA H200" -> "H200",
// "NVIDIA H100 80GB HBM3" -> "H100-SXM", "NVIDIA A100-SXM4-80GB" -> "A100-80GB"); "" when none
// fits (an H100 PCIe, an A100 40GB, any other GPU).
std::string builtin_profile_for_gpu(const std::string& device_name);
// A profile file's contents: one profile object, or {"profiles": [ ... ]}.
std::vector<DeviceProfile> profiles_from_json(const nlohmann::json& j, const std::string& source);

}  // namespace vacc
