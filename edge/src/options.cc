#include "mlink/edge/options.h"

#include "mlink/common/config.h"

namespace mlink::edge {

Result<EdgeOptions> LoadEdgeOptions(const std::string& path) {
  MLINK_ASSIGN_OR_RETURN(config::Section root, config::LoadFile(path));
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
  serving.Optional("cost_ema", &s.cost_ema, 0.01, 1.0);
  serving.Optional("sink", &s.sink);
  if (s.sink != "-") serving.OptionalPath("sink", &s.sink);  // files are relative to the config
  if (s.profile_frames >= s.period_frames) serving.Error("profile_frames", "must be less than period_frames (" + std::to_string(s.period_frames) + ")");
  config::Section log = root.Child("log");
  log.Optional("level", &o.log_level, {"debug", "info", "warn", "error"});
  log.Optional("format", &o.log_format, {"text", "json"});
  MLINK_RETURN_IF_ERROR(root.Finish());
  return o;
}

}  // namespace mlink::edge
