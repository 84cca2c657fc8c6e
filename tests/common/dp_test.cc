// Clipping, Gaussian noise and the Renyi-DP accountant against hand-computed values.
#include "mlink/common/dp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "mlink/cloud/options.h"
#include "mlink/common/config.h"
#include "mlink/edge/options.h"

namespace mlink::dp {
namespace {

TEST(DpTest, ClipScalesAnUpdateAboveTheBoundToExactlyTheBound) {
  std::vector<float> v = {30.f, 0.f, -40.f};  // norm 50
  EXPECT_DOUBLE_EQ(ClipToNorm(&v, 5.0), 50.0);
  EXPECT_EQ(v, (std::vector<float>{3.f, 0.f, -4.f}));
  EXPECT_DOUBLE_EQ(L2Norm(v), 5.0);

  std::vector<float> w(1000);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = std::sin(0.37f * static_cast<float>(i)) * 3.f;
  const double before = L2Norm(w);
  ASSERT_GT(before, 2.0);
  EXPECT_DOUBLE_EQ(ClipToNorm(&w, 2.0), before);
  EXPECT_NEAR(L2Norm(w), 2.0, 2.0 * 1e-6);  // float rounding of each scaled coordinate
}

TEST(DpTest, ClipLeavesAnUpdateAtOrBelowTheBoundUntouched) {
  const std::vector<float> orig = {0.1f, -0.2f, 0.3f};
  std::vector<float> v = orig;
  EXPECT_DOUBLE_EQ(ClipToNorm(&v, 1.0), L2Norm(orig));
  EXPECT_EQ(v, orig);
  std::vector<float> at = {3.f, 4.f};
  EXPECT_DOUBLE_EQ(ClipToNorm(&at, 5.0), 5.0);
  EXPECT_EQ(at, (std::vector<float>{3.f, 4.f}));
  std::vector<float> off = {300.f, 400.f};
  ClipToNorm(&off, 0);  // bound 0: no clipping
  EXPECT_EQ(off, (std::vector<float>{300.f, 400.f}));
}

TEST(DpTest, GaussianRdpIsAlphaOverTwoSigmaSquared) {
  EXPECT_DOUBLE_EQ(GaussianRdp(2.0, 8.0), 1.0);
  EXPECT_DOUBLE_EQ(GaussianRdp(1.0, 5.8), 2.9);
  EXPECT_DOUBLE_EQ(GaussianRdp(0.5, 3.0), 6.0);
}

TEST(DpTest, OrdersGrid) {
  const auto& o = DefaultOrders();
  ASSERT_EQ(o.size(), 99u + 246u);
  EXPECT_DOUBLE_EQ(o.front(), 1.1);
  EXPECT_DOUBLE_EQ(o[98], 10.9);
  EXPECT_DOUBLE_EQ(o[99], 11.0);
  EXPECT_DOUBLE_EQ(o.back(), 256.0);
}

// eps = min over the grid of T alpha / (2 sigma^2) + ln(1/delta) / (alpha - 1). Worked by hand:
// the continuous optimum is alpha* = 1 + sqrt(2 sigma^2 ln(1/delta) / T); the grid point next to
// it wins.
TEST(DpTest, EpsilonMatchesHandComputedValues) {
  // sigma 1, one round, delta 1e-5: alpha* = 5.7985 -> 5.8: 2.9 + ln(1e5)/4.8 = 5.29852613853...
  Epsilon e = GaussianEpsilon(1.0, 1, 1e-5);
  EXPECT_DOUBLE_EQ(e.order, 5.8);
  EXPECT_DOUBLE_EQ(e.epsilon, 2.9 + std::log(1e5) / 4.8);
  EXPECT_NEAR(e.epsilon, 5.2985261385, 1e-9);
  // sigma 4, 10 rounds, delta 1e-6: alpha* = 7.65 -> 7.6: 10 * 7.6 / 32 + ln(1e6) / 6.6 = 4.46825917...
  e = GaussianEpsilon(4.0, 10, 1e-6);
  EXPECT_DOUBLE_EQ(e.order, 7.6);
  EXPECT_DOUBLE_EQ(e.epsilon, 2.375 + std::log(1e6) / 6.6);
  EXPECT_NEAR(e.epsilon, 4.4682591754, 1e-9);
  // sigma 10, 1000 rounds, delta 1e-5: alpha* = 2.517 -> 2.5: 1000 * 2.5 / 200 + ln(1e5) / 1.5 = 20.17528...
  e = GaussianEpsilon(10.0, 1000, 1e-5);
  EXPECT_DOUBLE_EQ(e.order, 2.5);
  EXPECT_DOUBLE_EQ(e.epsilon, 12.5 + std::log(1e5) / 1.5);
  // Composition is T times the per-round RDP: 100 rounds of sigma 10 cost what one round of sigma 1 does.
  EXPECT_DOUBLE_EQ(GaussianEpsilon(10.0, 100, 1e-5).epsilon, GaussianEpsilon(1.0, 1, 1e-5).epsilon);
  // Nothing released costs nothing; noise-free releases cost infinity.
  EXPECT_EQ(GaussianEpsilon(1.0, 0, 1e-5).epsilon, 0.0);
  EXPECT_EQ(GaussianEpsilon(0.0, 1, 1e-5).epsilon, std::numeric_limits<double>::infinity());
  // More rounds never cost less.
  double last = 0;
  for (uint64_t t = 1; t <= 50; ++t) {
    const double eps = GaussianEpsilon(1.1, t, 1e-5).epsilon;
    EXPECT_GT(eps, last);
    last = eps;
  }
}

TEST(DpTest, AccountantStopsBeforeTheBudgetIsPassed) {
  PrivacyOptions o;
  o.clip_norm = 1;
  o.noise_multiplier = 4.0;
  o.delta = 1e-6;
  o.epsilon_budget = 2.375 + std::log(1e6) / 6.6;  // exactly the epsilon of 10 rounds
  Accountant a(o);
  int released = 0;
  while (a.CanRelease()) {
    a.Record();
    ++released;
  }
  EXPECT_EQ(released, 10);
  EXPECT_DOUBLE_EQ(a.Spent().epsilon, o.epsilon_budget);
  EXPECT_GT(a.After(11).epsilon, o.epsilon_budget);
  Accountant resumed(o, 7);  // releases counted before a restart
  EXPECT_EQ(resumed.releases(), 7u);
  EXPECT_TRUE(resumed.CanRelease());
  o.epsilon_budget = 0;  // no budget
  EXPECT_TRUE(Accountant(o, 1000000).CanRelease());
}

TEST(DpTest, NoiseHasTheConfiguredStdAndMeanZero) {
  GaussianNoise noise(12345);
  std::vector<double> v(200000, 0.0);
  noise.Add(&v, 0.75);
  double sum = 0, sq = 0;
  for (double x : v) sum += x;
  const double mean = sum / static_cast<double>(v.size());
  for (double x : v) sq += (x - mean) * (x - mean);
  const double sd = std::sqrt(sq / static_cast<double>(v.size() - 1));
  // Standard errors: mean 0.75/sqrt(n) = 0.0017, std 0.75/sqrt(2n) = 0.0012; 5 of them each.
  EXPECT_NEAR(mean, 0.0, 0.0085);
  EXPECT_NEAR(sd, 0.75, 0.006);
}

TEST(DpTest, SeededNoiseIsReproducibleAndRoundsDiffer) {
  std::vector<float> a(64, 1.f), b(64, 1.f), c(64, 1.f);
  GaussianNoise::ForRound(9, 3).Add(&a, 1.0);
  GaussianNoise::ForRound(9, 3).Add(&b, 1.0);
  GaussianNoise::ForRound(9, 4).Add(&c, 1.0);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<float> r1(64, 1.f), r2(64, 1.f);
  GaussianNoise::ForRound(0, 3).Add(&r1, 1.0);  // seed 0: random
  GaussianNoise::ForRound(0, 3).Add(&r2, 1.0);
  EXPECT_NE(r1, r2);
}

// Local DP on an update: clipped to C, then N(0, (sigma C)^2) per coordinate.
TEST(DpTest, PrivatizeClipsThenAddsNoiseOfStdSigmaTimesClip) {
  PrivacyOptions o;
  o.clip_norm = 0.5;
  o.noise_multiplier = 1.5;
  o.seed = 77;
  std::vector<float> big(100000, 1.f);  // norm sqrt(1e5), far above the bound
  EXPECT_DOUBLE_EQ(Privatize(o, 2, &big), std::sqrt(1e5));
  // Noise alone, from the same stream: what remains once it is taken away is the clipped update.
  std::vector<double> noise(big.size(), 0.0);
  GaussianNoise::ForRound(77, 2).Add(&noise, 1.5 * 0.5);
  double sq = 0, clipped_sq = 0;
  for (std::size_t i = 0; i < big.size(); ++i) {
    sq += noise[i] * noise[i];
    const double c = static_cast<double>(big[i]) - noise[i];
    clipped_sq += c * c;
  }
  EXPECT_NEAR(std::sqrt(clipped_sq), 0.5, 1e-3);
  // Empirical std of the noise: 0.75 within 5 standard errors (0.75 / sqrt(2n) = 0.0017).
  EXPECT_NEAR(std::sqrt(sq / static_cast<double>(big.size())), 0.75, 0.0085);
}

TEST(DpTest, ConfigErrorsAreNamed) {
  auto root = config::LoadString(
      "a: {clip_norm: 0, noise_multiplier: 0, delta: 1}\n"
      "b: {noise_multiplier: 1, epsilon_budget: 1}\n"
      "c: {clip_norm: 2, noise_multiplier: 1.1, delta: 1e-6, epsilon_budget: 30, seed: 5}\n",
      "privacy.yaml");
  ASSERT_TRUE(root.ok()) << root.status();
  PrivacyOptions a, b, c;
  config::Section sa = root->Child("a"), sb = root->Child("b"), sc = root->Child("c");
  PrivacyOptionsFromConfig(sa, true, &a);
  PrivacyOptionsFromConfig(sb, true, &b);
  PrivacyOptionsFromConfig(sc, true, &c);
  Status st = root->Finish();
  ASSERT_FALSE(st.ok());
  const std::string& m = st.message();
  EXPECT_NE(m.find("a.clip_norm"), std::string::npos) << m;
  EXPECT_NE(m.find("must be > 0 (the L2 bound"), std::string::npos) << m;
  EXPECT_NE(m.find("a.noise_multiplier"), std::string::npos) << m;
  EXPECT_NE(m.find("a.delta"), std::string::npos) << m;
  EXPECT_NE(m.find("b.clip_norm"), std::string::npos) << m;  // missing
  EXPECT_NE(m.find("b.epsilon_budget"), std::string::npos) << m;
  EXPECT_NE(m.find("below the epsilon of a single release"), std::string::npos) << m;
  EXPECT_EQ(m.find("'c."), std::string::npos) << m;
  EXPECT_NE(m.find("invalid config (5 errors)"), std::string::npos) << m;  // one per bad key
  EXPECT_DOUBLE_EQ(c.clip_norm, 2);
  EXPECT_DOUBLE_EQ(c.noise_multiplier, 1.1);
  EXPECT_DOUBLE_EQ(c.delta, 1e-6);
  EXPECT_DOUBLE_EQ(c.epsilon_budget, 30);
  EXPECT_EQ(c.seed, 5u);
  EXPECT_TRUE(c.enabled());
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string p = (std::filesystem::temp_directory_path() / ("mlink-" + std::to_string(::getpid()) + "-" + name)).string();
  std::ofstream(p) << text;
  return p;
}

const char kSpec[] = "    spec: {source: {kind: vector, dim: 2}, target: {kind: vector, dim: 3}, task: single_label}\n";

TEST(PrivacyOptionsTest, CloudLinkClippingWeightCapAndCentralPrivacyLoad) {
  std::string p = WriteTemp("dp-cloud.yaml", std::string("server: {port: 8443}\ntls: {ca: a.pem, cert: b.pem, key: c.pem}\n") +
                                                 "links:\n  - id: x\n" + kSpec +
                                                 "    round: {aggregation: sample_weighted, clip_norm: 2.5, max_samples: 500}\n"
                                                 "    privacy: {noise_multiplier: 1.2, delta: 1e-6, epsilon_budget: 40, seed: 3}\n");
  auto o = cloud::LoadCloudOptions(p);
  std::filesystem::remove(p);
  ASSERT_TRUE(o.ok()) << o.status();
  const cloud::LinkOptions& l = o->links[0];
  EXPECT_DOUBLE_EQ(l.clip_norm, 2.5);
  EXPECT_EQ(l.max_samples, 500u);
  EXPECT_TRUE(l.privacy.enabled());
  EXPECT_DOUBLE_EQ(l.privacy.clip_norm, 2.5);
  EXPECT_DOUBLE_EQ(l.privacy.noise_multiplier, 1.2);
  EXPECT_DOUBLE_EQ(l.privacy.delta, 1e-6);
  EXPECT_DOUBLE_EQ(l.privacy.epsilon_budget, 40);
  EXPECT_EQ(l.privacy.seed, 3u);
}

TEST(PrivacyOptionsTest, CloudPrivacyWithoutItsBoundsIsNamed) {
  std::string p = WriteTemp("dp-cloud-bad.yaml", std::string("server: {port: 8443}\ntls: {ca: a.pem, cert: b.pem, key: c.pem}\n") +
                                                     "links:\n  - id: x\n" + kSpec +
                                                     "    round: {max_samples: 10}\n"
                                                     "    privacy: {noise_multiplier: 1}\n"
                                                     "  - id: y\n" + kSpec +
                                                     "    round: {aggregation: sample_weighted, clip_norm: 1}\n"
                                                     "    privacy: {noise_multiplier: 1, delta: 0}\n");
  auto o = cloud::LoadCloudOptions(p);
  std::filesystem::remove(p);
  ASSERT_FALSE(o.ok());
  const std::string& m = o.status().message();
  EXPECT_NE(m.find("'links[0].round.max_samples': caps sample weights, so it needs aggregation: sample_weighted"), std::string::npos) << m;
  EXPECT_NE(m.find("'links[0].privacy': central privacy needs round.clip_norm > 0"), std::string::npos) << m;
  EXPECT_NE(m.find("'links[1].privacy': central privacy with sample_weighted aggregation needs round.max_samples"), std::string::npos) << m;
  EXPECT_NE(m.find("'links[1].privacy.delta': must be in (0, 1)"), std::string::npos) << m;
}

TEST(PrivacyOptionsTest, EdgeLocalPrivacyPerFederatedLink) {
  const std::string head = "site: s\nmodels:\n  - {name: m, kind: hog}\n  - {name: n, kind: mog2}\n"
                           "cloud:\n  url: wss://127.0.0.1:1/v1/federation\n  ca: a\n  cert: b\n  key: c\n  links:\n";
  std::string p = WriteTemp("dp-edge.yaml", head + "    - {id: x, source: m, target: n, privacy: {clip_norm: 0.5, noise_multiplier: 2, epsilon_budget: 12}}\n"
                                                   "    - {id: y, source: n, target: m}\n");
  auto o = edge::LoadEdgeOptions(p);
  std::filesystem::remove(p);
  ASSERT_TRUE(o.ok()) << o.status();
  const auto& links = o->learning.federation.links;
  ASSERT_EQ(links.size(), 2u);
  EXPECT_TRUE(links[0].privacy.enabled());
  EXPECT_DOUBLE_EQ(links[0].privacy.clip_norm, 0.5);
  EXPECT_DOUBLE_EQ(links[0].privacy.noise_multiplier, 2);
  EXPECT_DOUBLE_EQ(links[0].privacy.delta, 1e-5);
  EXPECT_DOUBLE_EQ(links[0].privacy.epsilon_budget, 12);
  EXPECT_FALSE(links[1].privacy.enabled());

  p = WriteTemp("dp-edge-bad.yaml", head + "    - {id: x, source: m, target: n, privacy: {noise_multiplier: 2, colour: red}}\n");
  o = edge::LoadEdgeOptions(p);
  std::filesystem::remove(p);
  ASSERT_FALSE(o.ok());
  const std::string& m = o.status().message();
  EXPECT_NE(m.find("'cloud.links[0].privacy.clip_norm': missing"), std::string::npos) << m;
  EXPECT_NE(m.find("'cloud.links[0].privacy.colour': unknown key"), std::string::npos) << m;
}

}  // namespace
}  // namespace mlink::dp
