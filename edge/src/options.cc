#include "mlink/edge/options.h"

#include "mlink/common/config.h"

namespace mlink::edge {
namespace {

Result<EdgeOptions> FromConfig(config::Section root) {
  EdgeOptions o;
  root.Required("site", &o.site);
  root.Optional("device", &o.device);
  if (o.device != "cpu" && o.device != "auto" && o.device.rfind("cuda", 0) != 0) {
    root.Error("device", "expected one of cpu, cuda, cuda:N, auto, got \"" + o.device + "\"");
  }
  root.OptionalPath("data_dir", &o.data_dir);
  config::Section cloud = root.Child("cloud");
  o.federation = cloud.present();
  std::string url;
  if (o.federation) cloud.Required("url", &url);
  if (!url.empty()) {
    auto ep = protocol::ParseFederationUrl(url);
    if (ep.ok()) {
      o.cloud = *ep;
    } else {
      cloud.Error("url", ep.status().message());
    }
  }
  if (o.federation) {
    cloud.RequiredPath("ca", &o.ca_file);
    cloud.RequiredPath("cert", &o.cert_file);
    cloud.RequiredPath("key", &o.key_file);
  }
  FederationOptions& fed = o.learning.federation;
  fed.enabled = o.federation;
  fed.endpoint = o.cloud;
  fed.ca_file = o.ca_file;
  fed.cert_file = o.cert_file;
  fed.key_file = o.key_file;
  cloud.Optional("local_epochs", &fed.local_epochs, 1, 10000);
  cloud.Optional("min_samples", &fed.min_samples, 1, 100000000);
  cloud.Optional("round_interval_s", &fed.round_interval_s, 0.0, 86400.0);
  cloud.Optional("backoff_initial_s", &fed.backoff_initial_s, 0.01, 3600);
  cloud.Optional("backoff_max_s", &fed.backoff_max_s, 0.01, 86400);
  cloud.Optional("idle_timeout_s", &fed.idle_timeout_s, 0.5, 86400);
  cloud.Optional("connect_timeout_s", &fed.connect_timeout_s, 0.1, 3600);
  std::vector<config::Section> fed_links = cloud.List("links");
  config::Section source = root.Child("source");
  o.has_source = source.present();
  if (o.has_source) o.source = SourceOptionsFromConfig(source);
  if (root.Has("models")) o.models = ModelConfigsFromConfig(root);
  config::Section serving = root.Child("serving");
  ServingOptions& s = o.serving;
  serving.Optional("budget_ms", &s.budget_ms, 0.0, 1e9);
  serving.Optional("period_frames", &s.period_frames, 2, 1000000);
  serving.Optional("profile_frames", &s.profile_frames, 1, 1000000);
  serving.Optional("bootstrap_frames", &s.bootstrap_frames, 10, 10000000);
  serving.Optional("scheduler", &s.scheduler, {"marginal_gain", "activation_probability"});
  serving.Optional("ensemble_gain", &s.ensemble_gain, 0.0, 1.0);
  serving.Optional("link_epochs", &s.link_epochs, 1, 10000);
  serving.Optional("link_threads", &s.link_threads, 0, 1024);
  serving.Optional("cost_ema", &s.cost_ema, 0.01, 1.0);
  serving.Optional("sink", &s.sink);
  if (s.sink != "-") serving.OptionalPath("sink", &s.sink);  // files are relative to the config
  if (s.profile_frames >= s.period_frames) serving.Error("profile_frames", "must be less than period_frames (" + std::to_string(s.period_frames) + ")");
  LearningOptions& l = o.learning;
  config::Section learning = root.Child("learning");
  config::Section sampling = learning.Child("sampling");
  sampling.Optional("policy", &l.sampling.policy, {"none", "periodic", "uncertainty", "loss_prediction"});
  sampling.Optional("budget", &l.sampling.budget, 0.0, 1.0);
  sampling.Optional("period_frames", &l.sampling.period_frames, 1, 10000000);
  sampling.Optional("window", &l.sampling.window, 1, 1000000);
  learning.Optional("retrain_samples", &l.retrain_samples, 0, 100000000);
  learning.Optional("retrain_epochs", &l.retrain_epochs, 1, 10000);
  learning.Optional("train_window", &l.train_window, 10, 100000000);
  config::Section store = learning.Child("store");
  store.Optional("max_sampled", &l.store.max_sampled, 1, int64_t{1} << 40);
  store.Optional("recent_frames", &l.store.recent_frames, 0, int64_t{1} << 40);
  store.Optional("max_labels", &l.store.max_labels, 0, int64_t{1} << 40);
  config::Section http = learning.Child("http");
  http.Optional("listen", &l.http_listen);
  http.Optional("port", &l.http_port, -1, 65535);
  config::Section oracle = root.Child("oracle");
  l.oracle_enabled = oracle.present();
  if (l.oracle_enabled) {
    oracle.Required("model", &l.oracle.model);
    oracle.Optional("classes", &l.oracle.classes, 2, 100000);
    std::string task = "single_label";
    oracle.Optional("task", &task, {"single_label", "multi_label", "regression", "count", "box"});
    oracle.Optional("dim", &l.oracle.dim, 1, 100000);
    oracle.Optional("min_labels", &l.oracle.min_labels, 2, 100000000);
    oracle.Optional("retrain_labels", &l.oracle.retrain_labels, 1, 100000000);
    auto t = link::ParseTaskKind(task);
    if (t.ok()) l.oracle.task = *t;
    if (l.oracle.task == link::TaskKind::kSingleLabel) {
      if (l.oracle.classes == 0) oracle.Error("classes", "a single-label oracle needs 'classes' (labels are class numbers 0..classes-1)");
      l.oracle.dim = l.oracle.classes;
    } else if (l.oracle.dim == 0) {
      oracle.Error("dim", "an oracle of task " + task + " needs 'dim' (values per label)");
    }
  }
  for (config::Section fl : fed_links) {
    FederatedLink f;
    fl.Required("id", &f.id);
    fl.Required("source", &f.source);
    fl.Required("target", &f.target);
    bool src = false, dst = false;
    for (const auto& m : o.models) {
      src = src || m.name == f.source;
      dst = dst || m.name == f.target;
    }
    // Has(): a missing key is already reported; an empty name is not a model either.
    if (fl.Has("source") && !src) fl.Error("source", "'" + f.source + "' is not one of the site's models");
    if (fl.Has("target") && !dst && f.target != "oracle") {
      fl.Error("target", "'" + f.target + "' is neither one of the site's models nor \"oracle\"");
    }
    if (f.target == "oracle" && !l.oracle_enabled) fl.Error("target", "targets the oracle, but no 'oracle' section is configured");
    if (fl.Has("spec")) {
      config::Section spec = fl.Child("spec");
      f.spec = link::LinkSpecFromConfig(spec);
      f.spec_given = true;
    }
    fl.Optional("secure_aggregation", &f.secure_aggregation);
    config::Section privacy = fl.Child("privacy");
    dp::PrivacyOptionsFromConfig(privacy, /*with_clip=*/true, &f.privacy);
    fed.links.push_back(std::move(f));
  }
  config::Section log = root.Child("log");
  log.Optional("level", &o.log_level, {"debug", "info", "warn", "error"});
  log.Optional("format", &o.log_format, {"text", "json"});
  MLINK_RETURN_IF_ERROR(root.Finish());
  return o;
}

}  // namespace

Result<EdgeOptions> LoadEdgeOptions(const std::string& path) {
  MLINK_ASSIGN_OR_RETURN(config::Section root, config::LoadFile(path));
  return FromConfig(root);
}

Result<EdgeOptions> ParseEdgeOptions(const std::string& text, const std::string& name) {
  MLINK_ASSIGN_OR_RETURN(config::Section root, config::LoadString(text, name));
  return FromConfig(root);
}

}  // namespace mlink::edge
