#include "mlink/common/dp.h"

#include <cmath>
#include <limits>

#include "mlink/common/config.h"

namespace mlink::dp {

namespace {

// splitmix64: spreads (seed, round) over the generator's seed space.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t RandomSeed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

double L2Norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * static_cast<double>(x);
  return std::sqrt(s);
}

double ClipToNorm(std::vector<float>* v, double bound) {
  const double norm = L2Norm(*v);
  if (bound > 0 && norm > bound) {
    const double scale = bound / norm;
    for (float& x : *v) x = static_cast<float>(static_cast<double>(x) * scale);
  }
  return norm;
}

GaussianNoise::GaussianNoise(uint64_t seed) : rng_(seed != 0 ? seed : RandomSeed()) {}

GaussianNoise GaussianNoise::ForRound(uint64_t seed, uint64_t round) {
  if (seed == 0) return GaussianNoise(0);
  uint64_t s = Mix(Mix(seed) ^ round);
  return GaussianNoise(s != 0 ? s : 1);
}

double GaussianNoise::Draw(double stddev) { return stddev * normal_(rng_); }

void GaussianNoise::Add(std::vector<float>* v, double stddev) {
  for (float& x : *v) x = static_cast<float>(static_cast<double>(x) + Draw(stddev));
}

void GaussianNoise::Add(std::vector<double>* v, double stddev) {
  for (double& x : *v) x += Draw(stddev);
}

const std::vector<double>& DefaultOrders() {
  static const std::vector<double> orders = [] {
    std::vector<double> o;
    for (int i = 11; i < 110; ++i) o.push_back(i / 10.0);
    for (int a = 11; a <= 256; ++a) o.push_back(a);
    return o;
  }();
  return orders;
}

double GaussianRdp(double sigma, double alpha) { return alpha / (2.0 * sigma * sigma); }

Epsilon GaussianEpsilon(double sigma, uint64_t rounds, double delta, const std::vector<double>& orders) {
  Epsilon best;
  if (rounds == 0) return best;
  best.epsilon = std::numeric_limits<double>::infinity();
  if (sigma <= 0) return best;
  const double log_inv_delta = std::log(1.0 / delta);
  for (double alpha : orders) {
    double eps = static_cast<double>(rounds) * GaussianRdp(sigma, alpha) + log_inv_delta / (alpha - 1.0);
    if (eps < best.epsilon) best = {eps, alpha};
  }
  return best;
}

double Privatize(const PrivacyOptions& options, uint64_t round, std::vector<float>* delta) {
  const double norm = ClipToNorm(delta, options.clip_norm);
  GaussianNoise::ForRound(options.seed, round).Add(delta, options.noise_multiplier * options.clip_norm);
  return norm;
}

Epsilon Accountant::After(uint64_t n) const {
  return GaussianEpsilon(options_.noise_multiplier, n, options_.delta);
}

bool Accountant::CanRelease() const {
  return options_.epsilon_budget <= 0 || After(releases_ + 1).epsilon <= options_.epsilon_budget;
}

void PrivacyOptionsFromConfig(config::Section& s, bool with_clip, PrivacyOptions* out) {
  if (!s.present()) return;
  // A value out of range is reported by the reader and leaves NaN here, so each bad key gets
  // one error; 0 is in range but meaningless for these, and gets its own.
  const double kUnset = std::numeric_limits<double>::quiet_NaN();
  if (with_clip) {
    double c = kUnset;
    s.Required("clip_norm", &c, 0.0, 1e12);
    if (c == 0) s.Error("clip_norm", "must be > 0 (the L2 bound the noise is scaled to)");
    if (c > 0) out->clip_norm = c;
  }
  double sigma = kUnset;
  s.Required("noise_multiplier", &sigma, 0.0, 1e6);
  if (sigma == 0) {
    s.Error("noise_multiplier", "must be > 0 (noise std = noise_multiplier * clip_norm); drop the privacy section to turn noise off");
  }
  if (sigma > 0) out->noise_multiplier = sigma;
  double delta = kUnset;
  s.Optional("delta", &delta, 0.0, 1.0);
  if (delta == 0 || delta == 1) s.Error("delta", "must be in (0, 1), e.g. 1e-5");
  if (delta > 0 && delta < 1) out->delta = delta;
  s.Optional("epsilon_budget", &out->epsilon_budget, 0.0, 1e9);
  int64_t seed = 0;
  s.Optional("seed", &seed, 0, INT64_MAX);
  out->seed = static_cast<uint64_t>(seed);
  if (out->epsilon_budget > 0 && out->noise_multiplier > 0 && !Accountant(*out).CanRelease()) {
    s.Error("epsilon_budget", "is below the epsilon of a single release (" +
                                  std::to_string(GaussianEpsilon(out->noise_multiplier, 1, out->delta).epsilon) +
                                  " at this delta); raise it or the noise_multiplier");
  }
}

}  // namespace mlink::dp
