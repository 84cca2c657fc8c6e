// The aggregator's update guard end to end over real TLS on loopback: a poisoned update is
// clipped, a claimed huge sample count is capped, and central differential privacy adds noise of
// the configured std to the sum, accounts epsilon per link and stops the link at its budget.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "../support/cloud_support.h"
#include "../support/fed_support.h"
#include "mlink/cloud/aggregator.h"
#include "mlink/common/dp.h"
#include "mlink/link/link.h"

namespace mlink::cloud {
namespace {

using mlink::testing::SmallSpec;
using mlink::testing::TestEdge;
using protocol::RejectReason;

// vec2vec 100 -> 100: 40300 parameters, for noise statistics.
link::LinkSpec LargeSpec() { return mlink::testing::VectorSpec(100, 100); }

// Exact in binary floating point: 0.25 (k + 1) (i mod 5 - 2). Norm 0.25 (k + 1) sqrt(100) for 50
// parameters: 2.5 for k = 0, 5 for k = 1.
std::vector<float> Delta(int k, std::size_t n) {
  std::vector<float> d(n);
  for (std::size_t i = 0; i < n; ++i) d[i] = 0.25f * static_cast<float>((k + 1) * (static_cast<int>(i % 5) - 2));
  return d;
}

// Theta + sum_k w_k delta_k / sum_k w_k, computed as the aggregator does (double sum, one division).
std::vector<float> Average(const std::vector<float>& theta, const std::vector<std::vector<float>>& deltas,
                           const std::vector<double>& weights, const std::vector<double>& noise = {}) {
  double total = 0;
  for (double w : weights) total += w;
  std::vector<float> out(theta.size());
  for (std::size_t i = 0; i < theta.size(); ++i) {
    double s = 0;
    for (std::size_t k = 0; k < deltas.size(); ++k) s += weights[k] * static_cast<double>(deltas[k][i]);
    if (!noise.empty()) s += noise[i];
    out[i] = static_cast<float>(static_cast<double>(theta[i]) + s / total);
  }
  return out;
}

double MetricValue(const std::string& text, const std::string& series) {
  auto at = text.find(series + " ");
  if (at == std::string::npos) return std::nan("");
  return std::stod(text.substr(at + series.size() + 1));
}

class UpdateGuardTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(mlink::testing::NewSuiteCerts(&certs_, "guard-certs", "site-a site-b site-c"));
  }
  static void TearDownTestSuite() { mlink::testing::DeleteSuiteDir(&certs_); }
  void SetUp() override { data_ = mlink::testing::TestDir("guard-"); }
  void TearDown() override { std::filesystem::remove_all(data_); }

  CloudOptions Options(const link::LinkSpec& spec, int min_edges) {
    CloudOptions o = mlink::testing::CloudOptionsFor(*certs_, data_);
    o.links.push_back(mlink::testing::LinkFor("l1", spec, 7, min_edges, min_edges, 60));
    return o;
  }

  static protocol::Update Update(const std::vector<float>& delta, uint64_t round, uint64_t samples = 10) {
    return mlink::testing::UpdateFor("l1", delta, round, samples);
  }

  // Connects, says Hello, takes the Welcome and the current GlobalLink.
  std::unique_ptr<TestEdge> Join(const std::string& name, uint16_t port, const link::LinkSpec& spec) {
    Status err;
    auto e = TestEdge::Connect(*certs_, name, port, &err);
    EXPECT_TRUE(e) << err;
    if (!e) return nullptr;
    protocol::Hello h;
    h.protocol_version = protocol::kProtocolVersion;
    h.links.push_back({"l1", spec.Hash()});
    EXPECT_TRUE(e->client().Send(h).ok());
    auto w = e->Next<protocol::Welcome>();
    EXPECT_TRUE(w && w->accepted.size() == 1);
    EXPECT_TRUE(e->Next<protocol::GlobalLink>());
    return e;
  }

  static std::string* certs_;
  std::string data_;
};
std::string* UpdateGuardTest::certs_ = nullptr;

TEST_F(UpdateGuardTest, PoisonedUpdateIsClippedAndTheAverageIsExact) {
  CloudOptions o = Options(SmallSpec(), 3);
  o.links[0].clip_norm = 10;
  auto agg = Aggregator::Start(o);
  ASSERT_TRUE(agg.ok()) << agg.status();
  const std::vector<float> theta = (*agg)->GetLink("l1")->params;
  ASSERT_EQ(theta.size(), 50u);
  auto a = Join("site-a", (*agg)->port(), SmallSpec());
  auto b = Join("site-b", (*agg)->port(), SmallSpec());
  auto c = Join("site-c", (*agg)->port(), SmallSpec());
  // site-c is authorized but malicious: norm 500000, it would move Theta by 166667 unclipped.
  std::vector<float> poison(theta.size(), 0.f);
  poison[0] = 3e5f;
  poison[1] = -4e5f;
  const std::vector<float> d0 = Delta(0, theta.size()), d1 = Delta(1, theta.size());
  ASSERT_TRUE(a->client().Send(Update(d0, 0)).ok());
  ASSERT_TRUE(a->Next<protocol::Ack>());
  ASSERT_TRUE(b->client().Send(Update(d1, 0)).ok());
  ASSERT_TRUE(b->Next<protocol::Ack>());
  ASSERT_TRUE(c->client().Send(Update(poison, 0)).ok());
  ASSERT_TRUE(c->Next<protocol::Ack>());
  auto g = a->Next<protocol::GlobalLink>();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->round, 1u);
  // The poison scaled to norm 10 is (6, -8, 0, ...); the honest deltas are below the bound.
  std::vector<float> clipped(theta.size(), 0.f);
  clipped[0] = 6.f;
  clipped[1] = -8.f;
  EXPECT_EQ(g->params, Average(theta, {d0, d1, clipped}, {1, 1, 1}));
  // The malicious edge moved the average by exactly clip_norm / K, compared with sending nothing useful.
  const std::vector<float> without = Average(theta, {d0, d1, std::vector<float>(theta.size(), 0.f)}, {1, 1, 1});
  std::vector<float> moved(theta.size());
  for (std::size_t i = 0; i < theta.size(); ++i) moved[i] = g->params[i] - without[i];
  EXPECT_NEAR(dp::L2Norm(moved), 10.0 / 3, 1e-5);
  const std::string m = (*agg)->MetricsText();
  EXPECT_EQ(MetricValue(m, "mlink_updates_clipped_total{link=\"l1\"}"), 1.0) << m;
  EXPECT_EQ(MetricValue(m, "mlink_updates_accepted_total{link=\"l1\"}"), 3.0) << m;
  EXPECT_EQ(m.find("mlink_dp_epsilon"), std::string::npos) << "no privacy configured";
}

TEST_F(UpdateGuardTest, ClaimedHugeSampleCountIsCappedToMaxSamples) {
  CloudOptions o = Options(SmallSpec(), 2);
  o.links[0].aggregation = "sample_weighted";
  o.links[0].max_samples = 50;
  auto agg = Aggregator::Start(o);
  ASSERT_TRUE(agg.ok()) << agg.status();
  const std::vector<float> theta = (*agg)->GetLink("l1")->params;
  auto a = Join("site-a", (*agg)->port(), SmallSpec());
  auto b = Join("site-b", (*agg)->port(), SmallSpec());
  const std::vector<float> d0 = Delta(0, theta.size()), d1 = Delta(1, theta.size());
  ASSERT_TRUE(a->client().Send(Update(d0, 0, 1000000000)).ok());  // claims a billion samples
  ASSERT_TRUE(a->Next<protocol::Ack>());
  ASSERT_TRUE(b->client().Send(Update(d1, 0, 10)).ok());
  ASSERT_TRUE(b->Next<protocol::Ack>());
  auto g = b->Next<protocol::GlobalLink>();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->params, Average(theta, {d0, d1}, {50, 10}));
  EXPECT_NE(g->params, Average(theta, {d0, d1}, {1e9, 10}));
}

TEST_F(UpdateGuardTest, CentralNoiseHasStdSigmaClipOverKAndTheLinkStopsAtItsBudget) {
  const double kSigma = 0.8, kClip = 1.0, kDelta = 1e-5;
  const double eps2 = dp::GaussianEpsilon(kSigma, 2, kDelta).epsilon;
  CloudOptions o = Options(LargeSpec(), 2);
  o.links[0].clip_norm = kClip;
  o.links[0].privacy.clip_norm = kClip;
  o.links[0].privacy.noise_multiplier = kSigma;
  o.links[0].privacy.delta = kDelta;
  o.links[0].privacy.epsilon_budget = eps2;  // exactly two rounds
  o.links[0].privacy.seed = 42;
  std::vector<float> theta;
  {
    auto agg = Aggregator::Start(o);
    ASSERT_TRUE(agg.ok()) << agg.status();
    theta = (*agg)->GetLink("l1")->params;
    ASSERT_EQ(theta.size(), 40300u);
    EXPECT_EQ(MetricValue((*agg)->MetricsText(), "mlink_dp_epsilon{link=\"l1\"}"), 0.0);
    auto a = Join("site-a", (*agg)->port(), LargeSpec());
    auto b = Join("site-b", (*agg)->port(), LargeSpec());
    const std::vector<float> da(theta.size(), 0.001f), db(theta.size(), -0.002f);  // norms 0.2 and 0.4
    for (uint64_t round = 0; round < 2; ++round) {
      ASSERT_TRUE(a->client().Send(Update(da, round)).ok());
      ASSERT_TRUE(a->Next<protocol::Ack>());
      ASSERT_TRUE(b->client().Send(Update(db, round)).ok());
      ASSERT_TRUE(b->Next<protocol::Ack>());
      auto g = a->Next<protocol::GlobalLink>();
      ASSERT_TRUE(g);
      ASSERT_EQ(g->round, round + 1);
      ASSERT_TRUE(b->Next<protocol::GlobalLink>());
      // Exactly Theta + (sum + N(0, (sigma C)^2)) / K with the round's seeded noise stream.
      std::vector<double> noise(theta.size(), 0.0);
      dp::GaussianNoise::ForRound(42, round).Add(&noise, kSigma * kClip);
      EXPECT_EQ(g->params, Average(theta, {da, db}, {1, 1}, noise));
      // And measured: what remains after the mean delta has std sigma C / K = 0.4 and mean 0
      // (standard errors 0.0014 and 0.002 over 40300 coordinates; 5 of them).
      const std::vector<float> mean_only = Average(theta, {da, db}, {1, 1});
      double sum = 0, sq = 0;
      for (std::size_t i = 0; i < theta.size(); ++i) {
        const double r = static_cast<double>(g->params[i]) - static_cast<double>(mean_only[i]);
        sum += r;
        sq += r * r;
      }
      const double n = static_cast<double>(theta.size());
      EXPECT_NEAR(sum / n, 0.0, 0.01);
      EXPECT_NEAR(std::sqrt(sq / n), kSigma * kClip / 2, 0.007);
      theta = g->params;
    }
    const std::string m = (*agg)->MetricsText();
    EXPECT_NEAR(MetricValue(m, "mlink_dp_epsilon{link=\"l1\"}"), eps2, 1e-4 * eps2) << m;
    EXPECT_EQ(MetricValue(m, "mlink_dp_delta{link=\"l1\"}"), kDelta) << m;
    EXPECT_EQ(MetricValue(m, "mlink_dp_budget_spent{link=\"l1\"}"), 1.0) << m;
    // A third round would pass the budget: no round is open, and updates are refused.
    ASSERT_TRUE(a->client().Send(Update(da, 2)).ok());
    auto r = a->Next<protocol::Reject>();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->reason, RejectReason::kRoundNotOpen);
    EXPECT_NE(r->text.find("privacy budget"), std::string::npos) << r->text;
    EXPECT_EQ((*agg)->GetLink("l1")->round, 2u);
  }
  // After a restart the link's two rounds still count: it stays closed.
  auto agg = Aggregator::Start(o);
  ASSERT_TRUE(agg.ok()) << agg.status();
  const std::string m = (*agg)->MetricsText();
  EXPECT_NEAR(MetricValue(m, "mlink_dp_epsilon{link=\"l1\"}"), eps2, 1e-4 * eps2) << m;
  EXPECT_EQ(MetricValue(m, "mlink_dp_budget_spent{link=\"l1\"}"), 1.0) << m;
  auto a = Join("site-a", (*agg)->port(), LargeSpec());
  ASSERT_TRUE(a->client().Send(Update(std::vector<float>(theta.size(), 0.f), 2)).ok());
  auto r = a->Next<protocol::Reject>();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->reason, RejectReason::kRoundNotOpen);
  EXPECT_EQ((*agg)->GetLink("l1")->params, theta);
}

}  // namespace
}  // namespace mlink::cloud
