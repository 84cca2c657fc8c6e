// Options of one camera site (mlink-edge), loaded from configs/edge-<site>.yaml.
#pragma once

#include <string>
#include <vector>

#include "mlink/common/status.h"
#include "mlink/edge/learner.h"
#include "mlink/edge/models.h"
#include "mlink/edge/source.h"
#include "mlink/protocol/endpoint.h"

namespace mlink::edge {

// How a site serves (Algorithm 2 of the paper).
struct ServingOptions {
  double budget_ms = 0;          // compute budget per frame (sum of model costs); 0 = run all
  int period_frames = 100;       // re-select the active set every period
  int profile_frames = 3;        // frames per period on which every model runs (profiling)
  int bootstrap_frames = 60;     // frames that run every model before the first link training
  std::string scheduler = "marginal_gain";  // or "activation_probability" (the paper's rule)
  double ensemble_gain = 0.02;   // scheduler's estimate of the gain of each extra source
  int link_epochs = 100;         // link training epochs (early stopping on validation)
  // Threads for training the links (0 = one per core). One by default: training shares the
  // machine with serving. The trained links are the same bit for bit for any count.
  int link_threads = 1;
  double cost_ema = 0.3;         // weight of a new latency/performance measurement
  std::string sink = "-";        // JSON lines: "-" = stdout, else a file (appended)
};

struct EdgeOptions {
  std::string site;                      // site name, also the expected certificate subject
  std::string device = "auto";           // cpu, cuda, cuda:N or auto
  std::string data_dir = "edge-data";    // SQLite sample store and saved links
  bool federation = false;               // true when a cloud section is configured
  protocol::Endpoint cloud;              // aggregator endpoint (wss://...)
  std::string ca_file, cert_file, key_file;
  bool has_source = false;
  SourceOptions source;
  std::vector<ModelConfig> models;
  ServingOptions serving;
  LearningOptions learning;              // sampling, online training, oracle, federation
  std::string log_level = "info";
  std::string log_format = "text";
};

Result<EdgeOptions> LoadEdgeOptions(const std::string& path);
// The same from YAML text (fuzzing, tests); `name` stands in for the file name in messages, and
// relative paths are kept as written.
Result<EdgeOptions> ParseEdgeOptions(const std::string& text, const std::string& name);

}  // namespace mlink::edge
