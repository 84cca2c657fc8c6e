// Active sampling (Section 4.1 of the paper): on which frames to run the models the scheduler
// skips, so that their outputs become link-training samples, under a labeling budget (the share
// of frames on which every model runs for training).
//
//   periodic        the first round(budget x period) frames of every `period` frames;
//   uncertainty     frames whose predicted outputs are uncertain: entropy of a single-label
//                   link's distribution (normalised by log C), mean binary entropy for
//                   multi-label, and for counts / regression the spread of the ensemble's
//                   per-source predictions (plus, for counts, how close the prediction is to a
//                   rounding boundary);
//   loss_prediction frames whose loss, as predicted by a module on the links' hidden layer
//                   (link/loss_prediction.h), is high.
// The two score-driven policies sample a frame when its score is at or above a quantile of the
// last `window` scores; the quantile level starts at 1 - budget and adapts so that the share of
// sampled frames meets the budget even when scores come in runs, and a token bucket (budget
// tokens per frame, at most `burst` saved) keeps the share at or below the budget.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "mlink/common/status.h"

namespace mlink::edge {

struct SamplerOptions {
  std::string policy = "periodic";  // none, periodic, uncertainty, loss_prediction
  double budget = 0.05;             // share of frames sampled
  int period_frames = 100;          // periodic: length of one period
  int window = 200;                 // score policies: scores the threshold is taken from
  double burst = 3;                 // score policies: most samples saved up in the bucket
};

class Sampler {
 public:
  static Result<Sampler> Create(const SamplerOptions& options);
  bool needs_score() const { return kind_ == Kind::kUncertainty || kind_ == Kind::kLossPrediction; }
  bool wants_loss_prediction() const { return kind_ == Kind::kLossPrediction; }
  // Whether to sample this frame; `score` is the frame's uncertainty or predicted loss (ignored
  // by periodic). Call once per served frame, in order.
  bool Decide(int64_t frame, double score = 0);
  int64_t decided() const { return decided_; }
  int64_t sampled() const { return sampled_; }
  const SamplerOptions& options() const { return options_; }

 private:
  enum class Kind { kNone, kPeriodic, kUncertainty, kLossPrediction };
  explicit Sampler(const SamplerOptions& o, Kind k) : options_(o), kind_(k) {}
  double Threshold() const;
  SamplerOptions options_;
  Kind kind_;
  int64_t decided_ = 0;
  int64_t sampled_ = 0;
  double tokens_ = 1;
  double level_ = 0.9;  // quantile of recent scores a frame must reach (adapts to the budget)
  std::deque<double> recent_;
};

}  // namespace mlink::edge
