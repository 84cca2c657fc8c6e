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
  config::Section cloud = root.Child("cloud", true);
  std::string url;
  cloud.Required("url", &url);
  if (!url.empty()) {
    auto ep = protocol::ParseFederationUrl(url);
    if (ep.ok()) {
      o.cloud = *ep;
    } else {
      cloud.Error("url", ep.status().message());
    }
  }
  cloud.RequiredPath("ca", &o.ca_file);
  cloud.RequiredPath("cert", &o.cert_file);
  cloud.RequiredPath("key", &o.key_file);
  config::Section log = root.Child("log");
  log.Optional("level", &o.log_level, {"debug", "info", "warn", "error"});
  log.Optional("format", &o.log_format, {"text", "json"});
  MLINK_RETURN_IF_ERROR(root.Finish());
  return o;
}

}  // namespace mlink::edge
