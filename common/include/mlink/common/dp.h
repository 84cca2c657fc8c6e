// Differential privacy and update robustness: L2 clipping, Gaussian noise and a Renyi-DP
// accountant for the Gaussian mechanism composed over rounds.
//
// The mechanism: an update (or a sum of updates) whose L2 sensitivity is C is released with
// N(0, (sigma C)^2) noise on every coordinate; sigma is the noise multiplier. Its Renyi DP of
// order alpha is alpha / (2 sigma^2) (Mironov 2017), T releases compose to T alpha / (2 sigma^2),
// and the (epsilon, delta) guarantee is the standard conversion
//   epsilon = min over alpha of  T alpha / (2 sigma^2) + log(1 / delta) / (alpha - 1)
// taken over a fixed grid of orders (DefaultOrders()).
//
// Torch-free; every function is pure or owns its state. Not thread-safe per object.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "mlink/common/status.h"

namespace mlink::config {
class Section;
}

namespace mlink::dp {

// The L2 norm, accumulated in double.
double L2Norm(const std::vector<float>& v);

// Scales `v` by bound / ||v|| when ||v|| > bound, so its norm becomes the bound; leaves it
// unchanged otherwise (and when bound <= 0, which means "no clipping"). Returns the norm before.
double ClipToNorm(std::vector<float>* v, double bound);

// Gaussian noise. A non-zero seed makes the draws reproducible (tests, replays); seed 0 seeds
// from std::random_device. Draws are IEEE doubles from std::normal_distribution over mt19937_64:
// neither a cryptographic generator nor a discrete Gaussian, which the accounting assumes
// exact; see the README's notes on what this does and does not protect.
class GaussianNoise {
 public:
  explicit GaussianNoise(uint64_t seed);
  // The generator for one round of a seeded stream (seed 0 stays random): independent of how
  // many draws earlier rounds took, so a restarted process draws the same noise for round r.
  static GaussianNoise ForRound(uint64_t seed, uint64_t round);
  void Add(std::vector<float>* v, double stddev);
  void Add(std::vector<double>* v, double stddev);
  double Draw(double stddev);

 private:
  std::mt19937_64 rng_;
  std::normal_distribution<double> normal_{0.0, 1.0};
};

// The grid of Renyi orders: 1.1, 1.2, ..., 10.9, then 11, 12, ..., 256.
const std::vector<double>& DefaultOrders();

// Renyi DP of order alpha of one Gaussian release with noise multiplier sigma.
double GaussianRdp(double sigma, double alpha);

struct Epsilon {
  double epsilon = 0;  // +infinity when sigma is 0 and rounds > 0
  double order = 0;    // the order that gave it
};
// (epsilon, delta) after `rounds` Gaussian releases with noise multiplier sigma.
Epsilon GaussianEpsilon(double sigma, uint64_t rounds, double delta,
                        const std::vector<double>& orders = DefaultOrders());

// What a DP stream is configured with (edge: per federated link, local DP; cloud: per link,
// central DP on the sum).
struct PrivacyOptions {
  double clip_norm = 0;         // L2 bound C of one update; required (> 0) with noise
  double noise_multiplier = 0;  // sigma: noise std is sigma * C
  double delta = 1e-5;          // the delta the epsilon is reported for
  double epsilon_budget = 0;    // stop releasing before epsilon would pass this; 0 = no budget
  uint64_t seed = 0;            // noise seed; 0 = random
  bool enabled() const { return noise_multiplier > 0; }
};

// Reads noise_multiplier, delta, epsilon_budget, seed (and clip_norm when `with_clip`) from a
// config section, recording named errors (e.g. a budget without noise).
void PrivacyOptionsFromConfig(config::Section& s, bool with_clip, PrivacyOptions* out);

// Local DP on one update: clips `delta` to options.clip_norm, then adds N(0, (sigma C)^2) to each
// coordinate from GaussianNoise::ForRound(options.seed, round). Returns the norm before clipping.
double Privatize(const PrivacyOptions& options, uint64_t round, std::vector<float>* delta);

// Counts the releases of one stream and answers what they cost.
class Accountant {
 public:
  explicit Accountant(const PrivacyOptions& options, uint64_t releases = 0)
      : options_(options), releases_(releases) {}
  void Record() { ++releases_; }
  uint64_t releases() const { return releases_; }
  // Epsilon (at options.delta) spent by the releases so far, and after `n` releases.
  Epsilon Spent() const { return After(releases_); }
  Epsilon After(uint64_t n) const;
  // True when one more release stays within the budget (always true without a budget).
  bool CanRelease() const;
  const PrivacyOptions& options() const { return options_; }

 private:
  PrivacyOptions options_;
  uint64_t releases_ = 0;
};

}  // namespace mlink::dp
