// Options of one camera site (mlink-edge), loaded from configs/edge-<site>.yaml.
#pragma once

#include <string>

#include "mlink/common/status.h"
#include "mlink/protocol/endpoint.h"

namespace mlink::edge {

struct EdgeOptions {
  std::string site;                      // site name, also the expected certificate subject
  std::string device = "auto";           // cpu, cuda, cuda:N or auto
  std::string data_dir = "edge-data";    // SQLite sample store and saved links
  protocol::Endpoint cloud;              // aggregator endpoint (wss://...)
  std::string ca_file, cert_file, key_file;
  std::string log_level = "info";
  std::string log_format = "text";
};

Result<EdgeOptions> LoadEdgeOptions(const std::string& path);

}  // namespace mlink::edge
