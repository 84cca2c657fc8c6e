// The serving path of one camera site (Algorithm 2 of the paper):
//   bootstrap: run every model on the first frames, train all pairwise links and ensembles;
//   every period: profile on a few frames by running all models, update link performances
//     p(g_ij) and model costs c(f_i) (exponential moving averages of measurements), select the
//     active set A under the budget, then serve: run the models in A, predict the others with
//     the ensembles of links from A;
//   every frame yields one JSON line on the sink: each model's output and whether it was run or
//   predicted.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "mlink/edge/learner.h"
#include "mlink/edge/link_serving.h"
#include "mlink/edge/options.h"
#include "mlink/edge/sampler.h"
#include "mlink/edge/scheduler.h"
#include "mlink/edge/source.h"

namespace mlink::edge {

struct ServeStats {
  int64_t frames = 0;
  int64_t periods = 0;
  int64_t failures = 0;           // model runs that failed (reported, predicted instead)
  int64_t dropped = 0;            // frames the source skipped because processing fell behind
  std::vector<int64_t> runs;      // per model: frames it ran on
  std::vector<int64_t> predicted; // per model: frames its output was predicted
  double model_ms = 0;            // time spent inside models
  double overhead_ms = 0;         // time spent predicting and scheduling, per frame
  double training_ms = 0;         // link training at bootstrap (not per-frame work)
  int64_t sampled = 0;            // frames actively sampled (every model run for link training)
  int64_t oracle_outputs = 0;     // frames served with an oracle-link output
  std::vector<bool> last_active;
};

class Site {
 public:
  // Builds the site's models and opens its source; errors name the model, file or endpoint.
  static Result<std::unique_ptr<Site>> Create(const EdgeOptions& options);
  ~Site();
  // Serves until the source ends, max_frames (0 = no limit) or *stop.
  Result<ServeStats> Run(const std::atomic<bool>* stop = nullptr, int64_t max_frames = 0);

  const std::vector<ModelInfo>& models() const { return infos_; }
  // The site's learning (sample store, online training, oracle, federation); null only before
  // Create returns.
  Learner* learner() const { return learner_.get(); }

 private:
  Site() = default;
  Status Bootstrap(const std::vector<std::vector<ModelOutput>>& rows);
  Status Reselect();
  Status Emit(const Frame& frame, const std::vector<ModelOutput>& outputs, const std::vector<bool>& run,
              const std::vector<float>* oracle, const std::string& oracle_choice);

  EdgeOptions options_;
  std::vector<std::unique_ptr<Model>> models_;
  std::vector<ModelInfo> infos_;
  std::unique_ptr<FrameSource> source_;
  std::shared_ptr<const LinkServing> serving_;
  std::unique_ptr<Learner> learner_;
  std::unique_ptr<Sampler> sampler_;
  int oracle_model_ = -1;                          // index of the model the oracle link reads
  bool performance_known_ = false;                 // false after loading saved links
  std::vector<double> costs_;                      // EMA of measured latency (or declared)
  std::vector<std::vector<double>> performance_;   // EMA of p(g_ij)
  std::vector<bool> active_;
  FILE* sink_ = nullptr;
  bool own_sink_ = false;
};

}  // namespace mlink::edge
