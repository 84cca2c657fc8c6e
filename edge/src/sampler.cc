#include "mlink/edge/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mlink::edge {

namespace {
constexpr double kLevelRate = 0.02;
}  // namespace

Result<Sampler> Sampler::Create(const SamplerOptions& o) {
  Kind k;
  if (o.policy == "none") {
    k = Kind::kNone;
  } else if (o.policy == "periodic") {
    k = Kind::kPeriodic;
  } else if (o.policy == "uncertainty") {
    k = Kind::kUncertainty;
  } else if (o.policy == "loss_prediction") {
    k = Kind::kLossPrediction;
  } else {
    return Status::InvalidArgument("sampling policy \"" + o.policy + "\": expected none, periodic, uncertainty or loss_prediction");
  }
  if (!(o.budget >= 0 && o.budget <= 1)) return Status::InvalidArgument("sampling budget must be in [0, 1], got " + std::to_string(o.budget));
  if (o.period_frames < 1 || o.window < 1 || !(o.burst >= 1)) {
    return Status::InvalidArgument("sampling: period_frames >= 1, window >= 1 and burst >= 1 expected");
  }
  Sampler s(o, k);
  s.level_ = 1.0 - o.budget;
  return s;
}

double Sampler::Threshold() const {
  if (recent_.empty()) return -INFINITY;
  std::vector<double> s(recent_.begin(), recent_.end());
  const double q = std::clamp(level_, 0.0, 1.0);
  const std::size_t at = std::min(s.size() - 1, static_cast<std::size_t>(std::floor(q * s.size())));
  std::nth_element(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(at), s.end());
  return s[at];
}

bool Sampler::Decide(int64_t frame, double score) {
  ++decided_;
  bool take = false;
  switch (kind_) {
    case Kind::kNone:
      break;
    case Kind::kPeriodic: {
      const int64_t n = std::llround(options_.budget * options_.period_frames);
      take = frame % options_.period_frames < n;
      break;
    }
    case Kind::kUncertainty:
    case Kind::kLossPrediction: {
      tokens_ = std::min(options_.burst, tokens_ + options_.budget);
      if (!std::isfinite(score)) score = 0;
      take = tokens_ >= 1 && score >= Threshold() && options_.budget > 0;
      recent_.push_back(score);
      if (static_cast<int>(recent_.size()) > options_.window) recent_.pop_front();
      if (take) tokens_ -= 1;
      // Scores come in runs (neighbouring frames look alike), so a fixed quantile under- or
      // over-spends; the level follows the budget: lower after frames not taken, higher after
      // frames taken (stochastic approximation of "the top `budget` share").
      level_ += kLevelRate * ((take ? 1.0 : 0.0) - options_.budget);
      level_ = std::clamp(level_, 0.0, 1.0);
      break;
    }
  }
  if (take) ++sampled_;
  return take;
}

}  // namespace mlink::edge
