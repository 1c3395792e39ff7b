#include "vacc/plan/device_profile.h"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "vacc/core/error.h"

namespace vacc {
namespace {

constexpr double kT = 1e12, kG = 1e9;

DeviceProfile make(const char* name, double bf16_tflops, double fp32_tflops, double memory_gb,
                   double bandwidth_gbytes_per_s, double efficiency) {
  DeviceProfile p;
  p.name = name;
  p.peak_bf16_flops = bf16_tflops * kT;
  p.peak_fp32_flops = fp32_tflops * kT;
  p.memory_bytes = memory_gb * kG;
  p.memory_bandwidth = bandwidth_gbytes_per_s * kG;
  p.peak_efficiency = efficiency;
  return p;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

}  // namespace

double DeviceProfile::matmul_seconds(DType dtype, double m, double n, double k) const {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  return 2 * m * n * k / (peak_flops(dtype) * efficiency(m, n, k));
}

DeviceProfile DeviceProfile::cpu(double measured_flops, double memory_bytes,
                                 double memory_bandwidth, int64_t measured_size) {
  VACC_CHECK(measured_flops > 0, "a CPU profile needs a measured peak (got ", measured_flops, ")");
  DeviceProfile p;
  p.name = "CPU";
  p.peak_efficiency = 1.0;
  p.half_work = 64.0 * 64 * 64;
  const double s = double(measured_size);
  const double eff = p.efficiency(s, s, s);
  p.peak_bf16_flops = p.peak_fp32_flops = measured_flops / eff;
  p.memory_bytes = memory_bytes;
  p.memory_bandwidth = memory_bandwidth;
  p.overlaps_communication = false;
  return p;
}

DeviceProfile DeviceProfile::scaled(double factor) const {
  DeviceProfile p = *this;
  p.peak_bf16_flops *= factor;
  p.peak_fp32_flops *= factor;
  p.memory_bandwidth *= factor;
  p.elementwise_bandwidth *= factor;
  p.optimizer_bandwidth *= factor;
  return p;
}

const std::vector<DeviceProfile>& builtin_profiles() {
  // Datasheet dense peaks (no sparsity); fp32 is the non-tensor-core rate.
  static const std::vector<DeviceProfile> profiles = {
      make("H100-SXM", 989, 67, 80, 3350, 0.70),
      make("H200", 989, 67, 141, 4800, 0.72),
      make("A100-80GB", 312, 19.5, 80, 2039, 0.75),
      make("MI250", 362, 47.9, 128, 3277, 0.55),  // both dies of the OAM module
      make("MI300X", 1307, 163, 192, 5300, 0.55),
  };
  return profiles;
}

namespace {

// The profile named `name` (case-insensitively), first in `extra`, then the built-ins; null if
// none.
const DeviceProfile* lookup_profile(const std::string& name,
                                    const std::vector<DeviceProfile>& extra) {
  for (const auto* list : {&extra, &builtin_profiles()})
    for (const DeviceProfile& p : *list)
      if (lower(p.name) == lower(name)) return &p;
  return nullptr;
}

}  // namespace

bool has_profile(const std::string& name, const std::vector<DeviceProfile>& extra) {
  return lookup_profile(name, extra) != nullptr;
}

std::string builtin_profile_for_gpu(const std::string& device_name) {
  const std::string n = lower(device_name);
  auto has = [&](const char* part) { return n.find(part) != std::string::npos; };
  if (has("h200")) return "H200";
  // The SXM H100 reports its memory type; the PCIe and NVL boards are slower.
  if (has("h100") && (has("sxm") || has("hbm3")) && !has("pcie") && !has("nvl")) return "H100-SXM";
  if (has("a100") && has("80gb")) return "A100-80GB";
  if (has("mi300x")) return "MI300X";
  return "";
}

DeviceProfile find_profile(const std::string& name, const std::vector<DeviceProfile>& extra) {
  if (const DeviceProfile* p = lookup_profile(name, extra)) return *p;
  std::string known;
  for (const auto* list : {&extra, &builtin_profiles()})
    for (const DeviceProfile& p : *list) known += (known.empty() ? "" : ", ") + p.name;
  fail("no device profile named '", name, "' (known: ", known,
       "; a profile file (--profile-file) can add one)");
}

DeviceProfile DeviceProfile::from_json(const nlohmann::json& j, const std::string& source) {
  VACC_CHECK(j.is_object() && j.contains("name") && j["name"].is_string(), source,
             ": a device profile needs a \"name\"");
  DeviceProfile p;
  const std::string name = j["name"].get<std::string>();
  for (const DeviceProfile& b : builtin_profiles())
    if (lower(b.name) == lower(name)) p = b;
  p.name = name;
  auto number = [&](const char* key, double scale, double& out) {
    if (!j.contains(key)) return;
    VACC_CHECK(j[key].is_number() && j[key].get<double>() > 0, source, ": profile '", name,
               "': \"", key, "\" must be a positive number");
    out = j[key].get<double>() * scale;
  };
  number("peak_bf16_tflops", kT, p.peak_bf16_flops);
  number("peak_fp32_tflops", kT, p.peak_fp32_flops);
  number("memory_gb", kG, p.memory_bytes);
  number("memory_bandwidth_gbytes_per_s", kG, p.memory_bandwidth);
  number("peak_efficiency", 1.0, p.peak_efficiency);
  number("half_work", 1.0, p.half_work);
  number("elementwise_bandwidth_gbytes_per_s", kG, p.elementwise_bandwidth);
  number("optimizer_bandwidth_gbytes_per_s", kG, p.optimizer_bandwidth);
  number("attention_factor", 1.0, p.attention_factor);
  number("classifier_factor", 1.0, p.classifier_factor);
  if (lower(name) == "cpu") p.overlaps_communication = false;
  if (j.contains("overlaps_communication")) {
    VACC_CHECK(j["overlaps_communication"].is_boolean(), source, ": profile '", name,
               "': \"overlaps_communication\" must be true or false");
    p.overlaps_communication = j["overlaps_communication"].get<bool>();
  }
  VACC_CHECK(p.peak_bf16_flops > 0 && p.peak_fp32_flops > 0 && p.memory_bandwidth > 0, source,
             ": profile '", name,
             "' needs peak_bf16_tflops, peak_fp32_tflops and memory_bandwidth_gbytes_per_s");
  VACC_CHECK(p.peak_efficiency <= 1.0, source, ": profile '", name,
             "': peak_efficiency is a fraction of peak (at most 1)");
  return p;
}

nlohmann::json DeviceProfile::to_json() const {
  nlohmann::json j{{"name", name},
          {"peak_bf16_tflops", peak_bf16_flops / kT},
          {"peak_fp32_tflops", peak_fp32_flops / kT},
          {"memory_gb", memory_bytes / kG},
          {"memory_bandwidth_gbytes_per_s", memory_bandwidth / kG},
          {"peak_efficiency", peak_efficiency},
          {"half_work", half_work}};
  if (elementwise_bandwidth > 0) j["elementwise_bandwidth_gbytes_per_s"] = elementwise_bandwidth / kG;
  if (optimizer_bandwidth > 0) j["optimizer_bandwidth_gbytes_per_s"] = optimizer_bandwidth / kG;
  if (attention_factor != 1) j["attention_factor"] = attention_factor;
  if (classifier_factor != 1) j["classifier_factor"] = classifier_factor;
  j["overlaps_communication"] = overlaps_communication;
  return j;
}

std::vector<DeviceProfile> profiles_from_json(const nlohmann::json& j, const std::string& source) {
  std::vector<DeviceProfile> out;
  if (j.is_object() && j.contains("profiles")) {
    VACC_CHECK(j["profiles"].is_array(), source, ": \"profiles\" must be an array");
    for (const auto& p : j["profiles"]) out.push_back(DeviceProfile::from_json(p, source));
  } else {
    out.push_back(DeviceProfile::from_json(j, source));
  }
  return out;
}

}  // namespace vacc
