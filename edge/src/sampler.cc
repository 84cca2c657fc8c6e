#include "mlink/edge/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mlink::edge {

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
  return Sampler(o, k);
}

double Sampler::Threshold() const {
  if (recent_.empty()) return -INFINITY;
  std::vector<double> s(recent_.begin(), recent_.end());
  const std::size_t at = std::min(s.size() - 1, static_cast<std::size_t>(std::floor((1.0 - options_.budget) * s.size())));
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
      break;
    }
  }
  if (take) ++sampled_;
  return take;
}

}  // namespace mlink::edge
