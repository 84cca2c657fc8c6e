#include "mlink/cloud/options.h"

#include <set>

#include "mlink/common/config.h"

namespace mlink::cloud {
namespace {

Result<CloudOptions> FromConfig(config::Section root) {
  CloudOptions o;
  config::Section server = root.Child("server", true);
  server.Optional("listen", &o.listen_host);
  server.Optional("port", &o.port, 0, 65535);
  server.Optional("http_port", &o.http_port, 0, 65535);
  server.Optional("handshake_timeout_s", &o.handshake_timeout_s, 0.1, 600.0);
  server.Optional("idle_timeout_s", &o.idle_timeout_s, 1.0, 86400.0);
  server.Optional("send_timeout_s", &o.send_timeout_s, 0.1, 86400.0);
  server.Optional("io_threads", &o.io_threads, 1, 64);
  int read_budget_mib = static_cast<int>(o.read_budget_bytes >> 20);
  server.Optional("read_budget_mib", &read_budget_mib, 1, 65536);
  o.read_budget_bytes = static_cast<std::size_t>(read_budget_mib) << 20;
  config::Section tls = root.Child("tls", true);
  tls.RequiredPath("ca", &o.ca_file);
  tls.RequiredPath("cert", &o.cert_file);
  tls.RequiredPath("key", &o.key_file);
  root.OptionalPath("data_dir", &o.data_dir);
  config::Section log = root.Child("log");
  log.Optional("level", &o.log_level, {"debug", "info", "warn", "error"});
  log.Optional("format", &o.log_format, {"text", "json"});
  std::set<std::string> ids;
  for (config::Section l : root.List("links", true)) {
    LinkOptions lo;
    l.Required("id", &lo.id);
    if (l.Has("id") && lo.id.empty()) l.Error("id", "must not be empty");
    config::Section spec = l.Child("spec", true);
    lo.spec = link::LinkSpecFromConfig(spec);
    if (spec.present()) {
      Status st = lo.spec.Validate();
      if (!st.ok() && l.Has("spec")) l.Error("spec", st.message());
    }
    int64_t seed = 1;
    l.Optional("init_seed", &seed, 0, INT64_MAX);
    lo.init_seed = static_cast<uint64_t>(seed);
    config::Section round = l.Child("round");
    round.Optional("min_edges", &lo.min_edges, 1, 100000);
    round.Optional("deadline_s", &lo.round_deadline_s, 0.1, 86400.0);
    round.Optional("quorum", &lo.quorum, 1, 100000);
    round.Optional("aggregation", &lo.aggregation, {"mean", "sample_weighted"});
    if (lo.quorum > lo.min_edges) round.Error("quorum", "must not exceed min_edges (" + std::to_string(lo.min_edges) + ")");
    round.Optional("clip_norm", &lo.clip_norm, 0.0, 1e12);
    int64_t max_samples = 0;
    round.Optional("max_samples", &max_samples, 0, INT64_MAX);
    lo.max_samples = static_cast<uint64_t>(max_samples);
    if (lo.max_samples > 0 && lo.aggregation != "sample_weighted") {
      round.Error("max_samples", "caps sample weights, so it needs aggregation: sample_weighted");
    }
    config::Section privacy = l.Child("privacy");
    if (privacy.present()) {
      lo.privacy.clip_norm = lo.clip_norm;
      dp::PrivacyOptionsFromConfig(privacy, /*with_clip=*/false, &lo.privacy);
      if (lo.clip_norm <= 0) {
        l.Error("privacy", "central privacy needs round.clip_norm > 0 (the L2 sensitivity the noise is scaled to)");
      }
      if (lo.aggregation == "sample_weighted" && lo.max_samples == 0) {
        l.Error("privacy", "central privacy with sample_weighted aggregation needs round.max_samples (bounds one edge's weight)");
      }
    }
    l.Optional("allowed_edges", &lo.allowed_edges);
    config::Section sa = l.Child("secure_aggregation");
    if (sa.present()) {
      SecureAggregationOptions& s = lo.secure_aggregation;
      sa.Optional("enabled", &s.enabled);
      sa.Optional("degree", &s.degree, 0, 1 << 20);
      sa.Optional("threshold", &s.threshold, 0, 1 << 20);
      sa.Optional("frac_bits", &s.frac_bits, 0, 30);
      sa.Optional("clip", &s.clip, 1e-6, 1e9);
      sa.Optional("phase_timeout_s", &s.phase_timeout_s, 0.1, 86400.0);
      if (s.degree % 2 != 0) sa.Error("degree", "must be even (0 = every other edge)");
      if (s.enabled && lo.min_edges < 3) round.Error("min_edges", "secure aggregation needs min_edges >= 3");
      // Edges send weight 1 with each masked delta: the unmasked sum is the plain mean's.
      if (s.enabled && lo.aggregation != "mean") round.Error("aggregation", "secure aggregation supports mean only");
    }
    if (!lo.id.empty() && !ids.insert(lo.id).second) l.Error("id", "duplicate link id '" + lo.id + "'");
    o.links.push_back(lo);
  }
  MLINK_RETURN_IF_ERROR(root.Finish());
  return o;
}

}  // namespace

Result<CloudOptions> LoadCloudOptions(const std::string& path) {
  MLINK_ASSIGN_OR_RETURN(config::Section root, config::LoadFile(path));
  return FromConfig(root);
}

Result<CloudOptions> ParseCloudOptions(const std::string& text, const std::string& name) {
  MLINK_ASSIGN_OR_RETURN(config::Section root, config::LoadString(text, name));
  return FromConfig(root);
}

}  // namespace mlink::cloud
