// Online link training under active sampling on a recorded trace (the paper's Fig. 6 form).
//
// The trace holds every model's output on every frame. A fixed active set A runs; the other
// models are predicted by their ensembles of links from A. All policies start from the same links
// (trained on the first `init_frames` frames, then continued there once more; for
// loss_prediction jointly with its loss module, so its start differs slightly). Then, frame by
// frame in recorded order:
//   offline         never updates the links;
//   periodic,
//   uncertainty,
//   loss_prediction choose frames (edge/sampler.h) under the same labeling budget; a chosen
//                   frame's true outputs join the training pool, and after every
//                   `retrain_samples` new samples the links continue training on the pool.
// Each segment of `segment_frames` frames reports the mean performance p of the predicted
// models' outputs against the recorded truth (predictions made before the frame was sampled).
#pragma once

#include <string>
#include <vector>

#include "mlink/common/status.h"

namespace mlink::eval {

struct OnlineOptions {
  std::vector<std::string> traces;   // traces recorded by `mlink-edge record`, played one after
                                     // the other (same models), e.g. a scene change
  std::vector<std::string> active;   // models that run (default: the site scheduler's choice)
  double budget = 0.1;
  int init_frames = 60;
  int segment_frames = 100;
  int retrain_samples = 10;
  int epochs = 20;
  uint64_t seed = 1;
  std::vector<std::string> policies = {"offline", "periodic", "uncertainty", "loss_prediction"};
};

struct OnlineResult {
  std::vector<std::string> predicted;          // the models predicted (not in A)
  std::vector<std::pair<int64_t, int64_t>> segments;  // [first, last] frame of each segment
  struct Policy {
    std::string name;
    std::vector<double> segment_p;            // mean p of the predicted models per segment
    double mean_p = 0;                        // over all evaluated frames' segments
    double sampled_share = 0;                 // frames sampled / frames served
    int retrains = 0;
    double seconds = 0;
  };
  std::vector<Policy> policies;
};

// Progress lines go to the log. Errors name the trace or the model.
Result<OnlineResult> RunOnlinePolicies(const OnlineOptions& options);

// The result as a Markdown table (segments as rows, policies as columns) plus a summary.
std::string OnlineMarkdown(const OnlineResult& r, const OnlineOptions& o);

}  // namespace mlink::eval
