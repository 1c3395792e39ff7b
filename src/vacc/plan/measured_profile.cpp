#include "vacc/plan/measured_profile.h"

#include <algorithm>
#include <string>

#include "vacc/core/error.h"

namespace vacc {
namespace {

const nlohmann::json& field(const nlohmann::json& j, const char* key, const std::string& where,
                            const std::string& source) {
  VACC_CHECK(j.is_object() && j.contains(key), source, ": a measured profile needs \"", where,
             key, "\"");
  return j[key];
}

std::string text(const nlohmann::json& j, const char* key, const std::string& source) {
  const nlohmann::json& v = field(j, key, "", source);
  VACC_CHECK(v.is_string(), source, ": \"", key, "\" must be a string");
  return v.get<std::string>();
}

double positive(const nlohmann::json& j, const char* key, const std::string& where,
                const std::string& source, bool allow_zero = false) {
  const nlohmann::json& v = field(j, key, where, source);
  VACC_CHECK(v.is_number() && (allow_zero ? v.get<double>() >= 0 : v.get<double>() > 0), source,
             ": \"", where, key, "\" must be a ", allow_zero ? "non-negative" : "positive",
             " number");
  return v.get<double>();
}

}  // namespace

MeasuredProfile MeasuredProfile::from_json(const nlohmann::json& j, const std::string& source) {
  VACC_CHECK(j.is_object(), source, ": a measured profile must be a JSON object");
  const std::string schema = text(j, "schema", source);
  VACC_CHECK(schema == kMeasuredProfileSchema, source, ": schema \"", schema,
             "\" is not one this vacc reads (", kMeasuredProfileSchema, ")");
  MeasuredProfile p;
  p.key = text(j, "key", source);
  p.flavor = text(j, "flavor", source);
  p.device_model = text(j, "device_model", source);
  p.measured_at = text(j, "measured_at", source);
  p.host = j.contains("host") && j["host"].is_string() ? j["host"].get<std::string>() : "";
  p.dtype = text(j, "dtype", source);
  p.devices = int(positive(j, "devices", "", source));
  // A CPU device is a number of the host's threads; a GPU's figure is 0 (its own cores).
  p.threads_per_device =
      int(positive(j, "threads_per_device", "", source, p.device_model != "CPU"));
  const nlohmann::json& device = field(j, "device", "", source);
  const nlohmann::json& fitted = field(device, "profile", "device.", source);
  p.device = DeviceProfile::from_json(fitted, source + " (device.profile)");
  if (j.contains("links") && !j["links"].is_null()) {
    const nlohmann::json& links = j["links"];
    const nlohmann::json& intra = field(links, "intra_node", "links.", source);
    p.link.bandwidth =
        positive(intra, "bandwidth_gbytes_per_s", "links.intra_node.", source) * 1e9;
    p.link.latency = positive(intra, "latency_us", "links.intra_node.", source, true) * 1e-6;
    if (intra.contains("sync_us"))
      p.link.sync = positive(intra, "sync_us", "links.intra_node.", source, true) * 1e-6;
    // Optional: the synchronisation cost by group size and compute between collectives.
    if (intra.contains("sync")) {
      const nlohmann::json& points = intra["sync"];
      VACC_CHECK(points.is_array(), source, ": \"links.intra_node.sync\" must be a list");
      for (size_t i = 0; i < points.size(); ++i) {
        const std::string where = "links.intra_node.sync[" + std::to_string(i) + "].";
        const double ranks = positive(points[i], "ranks", where, source);
        VACC_CHECK(ranks >= 2 && ranks == double(int(ranks)), source, ": \"", where,
                   "ranks\" must be a group size (2, 3, ...)");
        p.link.sync_points.push_back({int(ranks),
                                      positive(points[i], "compute_us", where, source) * 1e-6,
                                      positive(points[i], "sync_us", where, source, true) * 1e-6});
      }
      std::sort(p.link.sync_points.begin(), p.link.sync_points.end(),
                [](const LinkSpec::SyncPoint& a, const LinkSpec::SyncPoint& b) {
                  return a.ranks != b.ranks ? a.ranks < b.ranks : a.compute < b.compute;
                });
    }
    // Optional: each collective's own figures, as its ring's link.
    if (intra.contains("per_collective")) {
      const nlohmann::json& per = intra["per_collective"];
      VACC_CHECK(per.is_object(), source, ": \"links.intra_node.per_collective\" must be an object");
      const std::pair<const char*, LinkSpec::Measured*> ops[] = {
          {"all_reduce", &p.link.all_reduce}, {"reduce_scatter", &p.link.reduce_scatter},
          {"all_gather", &p.link.all_gather}, {"send_recv", &p.link.send}};
      for (const auto& [name, out] : ops) {
        if (!per.contains(name)) continue;
        const std::string where = std::string("links.intra_node.per_collective.") + name + ".";
        out->bandwidth = positive(per[name], "bandwidth_gbytes_per_s", where, source) * 1e9;
        out->latency = positive(per[name], "latency_us", where, source, true) * 1e-6;
      }
    }
    p.has_link = true;
  }
  p.document = j;
  return p;
}

}  // namespace vacc
