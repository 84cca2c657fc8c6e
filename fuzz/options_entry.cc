#include "entries.h"

#include <exception>
#include <set>
#include <string>
#include <vector>

#include "mlink/cloud/options.h"
#include "mlink/edge/options.h"

namespace mlink::fuzz {
namespace {

// The name configs are parsed under; every config error must mention it.
constexpr char kConfigName[] = "fuzz.yaml";

std::string Text(const uint8_t* data, std::size_t size) {
  return size == 0 ? std::string() : std::string(reinterpret_cast<const char*>(data), size);
}

Status CheckConfigError(const Status& st) {
  if (st.code() != StatusCode::kInvalidArgument) {
    return Status::Internal("config error with code other than kInvalidArgument: " + st.ToString());
  }
  if (st.message().find(kConfigName) == std::string::npos) {
    return Status::Internal("config error does not name the config: " + st.message());
  }
  return Status::Ok();
}

Status CheckCloud(const uint8_t* data, std::size_t size) {
  Result<cloud::CloudOptions> o = cloud::ParseCloudOptions(Text(data, size), kConfigName);
  if (!o.ok()) return CheckConfigError(o.status());
  std::set<std::string> ids;
  for (const cloud::LinkOptions& l : o->links) {
    if (l.quorum < 1 || l.quorum > l.min_edges) {
      return Status::Internal("link '" + l.id + "' accepted with quorum " + std::to_string(l.quorum) +
                              " and min_edges " + std::to_string(l.min_edges));
    }
    Status spec = l.spec.Validate();
    if (!spec.ok()) return Status::Internal("link '" + l.id + "' accepted with a bad spec: " + spec.message());
    if (l.id.empty()) return Status::Internal("a link with an empty id accepted");
    if (!ids.insert(l.id).second) return Status::Internal("duplicate link id '" + l.id + "' accepted");
    if (l.aggregation != "mean" && l.aggregation != "sample_weighted") {
      return Status::Internal("aggregation '" + l.aggregation + "' accepted");
    }
  }
  if (o->read_budget_bytes < (std::size_t{1} << 20)) return Status::Internal("read budget below 1 MiB accepted");
  return Status::Ok();
}

Status CheckEdge(const uint8_t* data, std::size_t size) {
  Result<edge::EdgeOptions> o = edge::ParseEdgeOptions(Text(data, size), kConfigName);
  if (!o.ok()) return CheckConfigError(o.status());
  if (o->serving.profile_frames >= o->serving.period_frames) {
    return Status::Internal("profile_frames " + std::to_string(o->serving.profile_frames) +
                            " >= period_frames " + std::to_string(o->serving.period_frames) + " accepted");
  }
  if (o->federation && (o->cloud.host.empty() || o->cloud.port == 0)) {
    return Status::Internal("federation accepted without a host and port");
  }
  std::set<std::string> names;
  for (const auto& m : o->models) {
    if (m.name.empty()) return Status::Internal("a model with an empty name accepted");
    if (!names.insert(m.name).second) return Status::Internal("duplicate model name '" + m.name + "' accepted");
  }
  for (const auto& f : o->learning.federation.links) {
    if (!names.count(f.source)) return Status::Internal("federated link source '" + f.source + "' is not a model");
    if (!names.count(f.target) && !(f.target == "oracle" && o->learning.oracle_enabled)) {
      return Status::Internal("federated link target '" + f.target + "' is neither a model nor the oracle");
    }
  }
  if (o->learning.oracle_enabled && o->learning.oracle.dim < 1) {
    return Status::Internal("oracle accepted with dim " + std::to_string(o->learning.oracle.dim));
  }
  return Status::Ok();
}

// No exception may leave a loader or the codec: both promise a Status.
template <typename F>
Status Guarded(const char* what, F&& check) {
  try {
    return check();
  } catch (const std::exception& e) {
    return Status::Internal(std::string(what) + ": exception escaped: " + e.what());
  } catch (...) {
    return Status::Internal(std::string(what) + ": unknown exception escaped");
  }
}

}  // namespace

Status CheckCloudOptionsInput(const uint8_t* data, std::size_t size) {
  return Guarded("cloud options", [&] { return CheckCloud(data, size); });
}

Status CheckEdgeOptionsInput(const uint8_t* data, std::size_t size) {
  return Guarded("edge options", [&] { return CheckEdge(data, size); });
}

}  // namespace mlink::fuzz
