// The aggregator: Algorithm 1 of the paper over the federation transport.
//
// Per link it keeps the open round r and the global parameters Theta_r. Each accepted Update
// (delta computed from Theta_r) is validated, committed to SQLite, folded into a running sum
// (memory O(d), not O(K d)) and only then acknowledged. A round closes when `min_edges` updates
// arrived, or at its deadline if at least `quorum` did (below quorum the deadline is extended
// and logged; a late or vanished edge never blocks a round forever):
//   mean:            Theta_{r+1} = Theta_r + (1/K) sum_k Delta_k
//   sample_weighted: Theta_{r+1} = Theta_r + sum_k (n_k / sum n) Delta_k
// and Theta_{r+1} is broadcast to every subscribed edge. After a crash, Start() reloads the open
// round with all its acknowledged updates (idempotent by edge, link and round).
//
// Threads: the transport's I/O threads only decode and enqueue; validation, SQLite and
// aggregation run on one worker thread; /healthz, /metrics and the status page (GET / or /status,
// and /status.json; rendered from a snapshot of counters taken under a short lock, never waiting
// for the worker) run on the HTTP thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mlink/cloud/options.h"
#include "mlink/common/status.h"

namespace mlink::cloud {

class Aggregator {
 public:
  static Result<std::unique_ptr<Aggregator>> Start(const CloudOptions& options);
  ~Aggregator();
  void Stop();

  uint16_t port() const;       // federation (wss) port actually bound
  uint16_t http_port() const;  // status page, /healthz, /metrics; 0 if disabled

  struct LinkStatus {
    std::string id;
    uint64_t round = 0;
    std::vector<float> params;
    std::size_t pending_updates = 0;
    uint64_t rounds_completed = 0;
  };
  // Thread-safe snapshot (taken on the worker thread).
  Result<LinkStatus> GetLink(const std::string& id) const;
  // Prometheus text exposition of the aggregator's counters.
  std::string MetricsText() const;

  struct Impl;

 private:
  explicit Aggregator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlink::cloud
