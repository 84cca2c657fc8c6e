// Options of the aggregator (mlink-cloud), loaded from configs/cloud.yaml.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mlink/common/dp.h"
#include "mlink/common/status.h"
#include "mlink/link/spec.h"

namespace mlink::cloud {

// Secure aggregation of a link's updates (protocol/secagg.md): edges send pairwise-masked,
// fixed-point updates and the aggregator learns only their sum. Config key
// links[].secure_aggregation; needs round.min_edges >= 3 and round.aggregation mean.
struct SecureAggregationOptions {
  bool enabled = false;
  int degree = 0;          // neighbours per edge; 0 = all others, else even (SecAgg+ graph)
  int threshold = 0;       // shares to rebuild an edge's secrets; 0 = degree / 2 + 1
  int frac_bits = 16;      // fixed point: x * 2^frac_bits
  double clip = 8.0;       // every input value (weight x delta, and the weight) within +-clip
  double phase_timeout_s = 10;  // each phase after key advertising closes at the latest then
};

struct LinkOptions {
  std::string id;                  // unique link name, e.g. "hog->fullbody"
  link::LinkSpec spec;
  uint64_t init_seed = 1;          // the global link starts from this seed (Algorithm 1, line 1)
  int min_edges = 1;               // a round closes once this many updates arrived ...
  double round_deadline_s = 60;    // ... or when the deadline passes with at least `quorum`
  int quorum = 1;
  std::string aggregation = "mean";  // "mean" (Algorithm 1) or "sample_weighted"
  std::vector<std::string> allowed_edges;  // certificate subjects (CN) allowed; empty = any
  SecureAggregationOptions secure_aggregation;
  // Bounds on one authorized edge's influence (config keys round.clip_norm, round.max_samples).
  // Each delta is scaled down to L2 norm clip_norm before it is averaged (0 = no clipping), and
  // with sample_weighted its weight is min(samples, max_samples) (0 = uncapped), so one edge
  // moves the average by at most clip_norm * its weight / the total weight.
  double clip_norm = 0;
  uint64_t max_samples = 0;
  // Central differential privacy (config section `privacy`): Gaussian noise with std
  // noise_multiplier * clip_norm * (max weight of one update) on the weighted sum of the clipped
  // deltas before it is divided by the total weight; one release per closed round, accounted per
  // link. privacy.clip_norm is round.clip_norm. Once one more round would pass
  // epsilon_budget, the link opens no more rounds.
  dp::PrivacyOptions privacy;
};

struct CloudOptions {
  std::string listen_host = "127.0.0.1";
  int port = 8443;
  int http_port = 8080;                      // status page, /healthz, /metrics; 0 disables
  double handshake_timeout_s = 10;
  double idle_timeout_s = 60;
  double send_timeout_s = 60;                // an edge that takes no frame for this long is dropped
  int io_threads = 2;
  // Received updates not yet committed and folded, all edges together (config key
  // server.read_budget_mib). Edges whose next update does not fit wait, their reads paused, so
  // a burst of K updates of d parameters holds O(d) plus this, not O(K d).
  std::size_t read_budget_bytes = 64u << 20;
  std::string ca_file, cert_file, key_file;  // PEM, resolved relative to the config file
  std::string data_dir = "cloud-data";       // SQLite state lives here
  std::string log_level = "info";
  std::string log_format = "text";
  std::vector<LinkOptions> links;
};

// Loads and validates; the error lists every bad key with file:line.
Result<CloudOptions> LoadCloudOptions(const std::string& path);
// The same from YAML text (fuzzing, tests); `name` stands in for the file name in messages, and
// relative paths are kept as written.
Result<CloudOptions> ParseCloudOptions(const std::string& text, const std::string& name);

}  // namespace mlink::cloud
