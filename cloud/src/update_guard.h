// What the aggregator does to each link's updates before and after averaging, beyond Algorithm 1:
// clipping each delta to an L2 bound and capping its sample weight (so one authorized but
// malicious edge moves the average a bounded amount), and central differential privacy
// (Gaussian noise on the weighted sum of the clipped deltas, one accounted release per round).
//
// Owned by one link's state on the aggregator's worker thread; not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "mlink/cloud/options.h"
#include "mlink/common/dp.h"

namespace mlink::cloud {

class UpdateGuard {
 public:
  // `released`: rounds already closed under this link's noise (the link's round number after a
  // restart: an over-count, never an under-count, if privacy was turned on later).
  UpdateGuard(const LinkOptions& options, uint64_t released);

  // The weight of an update claiming `samples`: 1 for mean, min(samples, max_samples) for
  // sample_weighted.
  double Weight(uint64_t samples) const;
  // Scales `delta` down to the clip bound; true if it was above it.
  bool Clip(std::vector<float>* delta) const;

  bool private_link() const { return options_.privacy.enabled(); }
  // The noise std on the weighted sum: noise_multiplier * clip_norm * the largest weight.
  double NoiseStd() const;
  // Adds round `round`'s noise to the weighted sum (no-op without privacy). Seeded streams draw
  // the same noise for a round, also after a restart or a retried commit.
  void AddNoise(uint64_t round, std::vector<double>* sum) const;
  // Records one release: call once the noised round is committed and about to be broadcast.
  void Released() { if (private_link()) accountant_.Record(); }
  // False once another round would spend more than the epsilon budget.
  bool CanOpenRound() const { return !private_link() || accountant_.CanRelease(); }
  dp::Epsilon Spent() const { return accountant_.Spent(); }
  dp::Epsilon NextRoundEpsilon() const { return accountant_.After(accountant_.releases() + 1); }
  uint64_t released() const { return accountant_.releases(); }

 private:
  LinkOptions options_;
  dp::Accountant accountant_;
};

}  // namespace mlink::cloud
