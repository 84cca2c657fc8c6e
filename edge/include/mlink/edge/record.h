// `mlink-edge record`: run every model of a site on every frame of its source and store each
// frame's outputs with measured per-model latency in a trace (SQLite).
#pragma once

#include <atomic>
#include <string>

#include "mlink/edge/options.h"

namespace mlink::edge {

struct RecordStats {
  int64_t frames = 0;
  int64_t failures = 0;               // model runs that failed (reported and skipped)
  std::vector<double> mean_latency_ms;  // per model
};

// Stops early when *stop becomes true (frames recorded so far are kept).
Result<RecordStats> Record(const EdgeOptions& options, const std::string& trace_path, int64_t max_frames,
                           const std::atomic<bool>* stop = nullptr);

}  // namespace mlink::edge
