// mlink-cloud: the federated aggregator (Algorithm 1 over mutual-TLS WebSockets).
#include <CLI/CLI.hpp>

#include <csignal>
#include <iostream>

#include "mlink/cloud/aggregator.h"
#include "mlink/cloud/options.h"
#include "mlink/common/log.h"
#include "mlink/link/link.h"

int main(int argc, char** argv) {
  CLI::App app{"mlink-cloud: federated aggregator for model links (Algorithm 1)"};
  std::string config_path = "configs/cloud.yaml";
  bool check = false;
  app.add_option("-c,--config", config_path, "aggregator config (YAML)");
  app.add_flag("--check", check, "validate the config, initialise every global link, print them and exit");
  CLI11_PARSE(app, argc, argv);

  auto options = mlink::cloud::LoadCloudOptions(config_path);
  if (!options.ok()) {
    std::cerr << "mlink-cloud: " << options.status().message() << "\n";
    return 2;
  }
  mlink::log::Level level;
  if (mlink::log::ParseLevel(options->log_level, &level)) mlink::log::SetLevel(level);
  mlink::log::Format format;
  if (mlink::log::ParseFormat(options->log_format, &format)) mlink::log::SetFormat(format);

  if (check) {
    for (const auto& l : options->links) {
      auto link = mlink::link::Link::Create(l.spec, l.init_seed);
      if (!link.ok()) {
        std::cerr << "mlink-cloud: link '" << l.id << "': " << link.status().message() << "\n";
        return 2;
      }
      auto params = (*link)->GetParams();
      MLOG_INFO("cloud", "global link initialised")
          .Kv("link", l.id)
          .Kv("arch", l.spec.ArchName())
          .Kv("spec_hash", l.spec.HashHex())
          .Kv("params", params.size())
          .Kv("checksum", std::to_string(params.Checksum()));
    }
    MLOG_INFO("cloud", "config ok").Kv("config", config_path).Kv("links", options->links.size());
    return 0;
  }

  // Block the stop signals before any thread starts, then wait for one on this thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto aggregator = mlink::cloud::Aggregator::Start(*options);
  if (!aggregator.ok()) {
    std::cerr << "mlink-cloud: " << aggregator.status().message() << "\n";
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  MLOG_INFO("cloud", "stopping").Kv("signal", sig == SIGINT ? "SIGINT" : "SIGTERM");
  (*aggregator)->Stop();
  MLOG_INFO("cloud", "stopped");
  return 0;
}
