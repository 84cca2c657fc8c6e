// mlink-edge: one camera site. This build validates the site's configuration and resolves its
// compute device; the serving path (frame sources, models, scheduler) arrives with the edge work.
#include <CLI/CLI.hpp>

#include <iostream>

#include "mlink/common/log.h"
#include "mlink/edge/options.h"
#include "mlink/link/device.h"

int main(int argc, char** argv) {
  CLI::App app{"mlink-edge: a camera site that links black-box models"};
  std::string config_path = "configs/edge-site-a.yaml";
  bool check = false;
  app.add_option("-c,--config", config_path, "site config (YAML)");
  app.add_flag("--check", check, "validate the config and the device, then exit");
  CLI11_PARSE(app, argc, argv);

  auto options = mlink::edge::LoadEdgeOptions(config_path);
  if (!options.ok()) {
    std::cerr << "mlink-edge: " << options.status().message() << "\n";
    return 2;
  }
  auto device = mlink::link::ResolveDevice(options->device);
  if (!device.ok()) {
    std::cerr << "mlink-edge: " << config_path << ": " << device.status().message() << "\n";
    return 2;
  }
  MLOG_INFO("edge", "config ok")
      .Kv("site", options->site)
      .Kv("device", device->ToString())
      .Kv("cloud", options->cloud.ToString());
  if (check) return 0;
  std::cerr << "mlink-edge: serving frames is not part of this build yet; run with --check to "
               "validate a config (see README, 'Status')\n";
  return 3;
}
