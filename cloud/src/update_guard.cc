#include "update_guard.h"

#include <algorithm>

namespace mlink::cloud {

UpdateGuard::UpdateGuard(const LinkOptions& options, uint64_t released)
    : options_(options), accountant_(options.privacy, options.privacy.enabled() ? released : 0) {}

double UpdateGuard::Weight(uint64_t samples) const {
  if (options_.aggregation != "sample_weighted") return 1.0;
  if (options_.max_samples > 0) samples = std::min(samples, options_.max_samples);
  return static_cast<double>(samples);
}

bool UpdateGuard::Clip(std::vector<float>* delta) const {
  return options_.clip_norm > 0 && dp::ClipToNorm(delta, options_.clip_norm) > options_.clip_norm;
}

double UpdateGuard::NoiseStd() const {
  const double max_weight = options_.aggregation == "sample_weighted" ? static_cast<double>(options_.max_samples) : 1.0;
  return options_.privacy.noise_multiplier * options_.clip_norm * max_weight;
}

void UpdateGuard::AddNoise(uint64_t round, std::vector<double>* sum) const {
  if (!private_link()) return;
  dp::GaussianNoise::ForRound(options_.privacy.seed, round).Add(sum, NoiseStd());
}

}  // namespace mlink::cloud
