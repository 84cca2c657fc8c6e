#include "mlink/edge/scheduler_sim.h"

#include <gtest/gtest.h>

#include <random>

namespace mlink::edge {
namespace {

TEST(SchedulingSimTest, DrawsAreReproducibleAndInRange) {
  std::mt19937 a(3), b(3);
  for (SimDistribution d : {SimDistribution::kNormal, SimDistribution::kBeta}) {
    SchedulingProblem p = RandomSchedulingProblem(6, d, &a);
    SchedulingProblem q = RandomSchedulingProblem(6, d, &b);
    ASSERT_EQ(p.costs.size(), 6u);
    EXPECT_EQ(p.costs, q.costs);
    EXPECT_EQ(p.link_performance, q.link_performance);
    for (int i = 0; i < 6; ++i) {
      EXPECT_GE(p.costs[i], 0.05);
      EXPECT_LE(p.costs[i], 1.0);
      EXPECT_EQ(p.link_performance[i][i], 0.0);
      for (int j = 0; j < 6; ++j) {
        EXPECT_GE(p.link_performance[i][j], 0.0);
        EXPECT_LE(p.link_performance[i][j], 1.0);
      }
    }
  }
  EXPECT_EQ(SimDistributionName(SimDistribution::kBeta), "beta");
}

// The simulation's per-budget means are those of the rules run on the same draws by hand.
TEST(SchedulingSimTest, AggregatesMatchTheRulesOnTheSameDraws) {
  SchedulingSimOptions o;
  o.models = 6;
  o.instances = 5;
  o.budget_fractions = {0.2, 0.5};
  o.seed = 17;
  auto r = RunSchedulingSimulation(o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->rules.size(), 4u);
  EXPECT_EQ(r->rules[0].name, "optimum");
  EXPECT_EQ(r->rules[3].name, "standalone");

  std::mt19937 rng(17);
  double opt_sum[2] = {0, 0}, paper_sum[2] = {0, 0}, alone_sum[2] = {0, 0};
  int trials[2] = {0, 0};
  for (int n = 0; n < 5; ++n) {
    SchedulingProblem p = RandomSchedulingProblem(6, SimDistribution::kNormal, &rng);
    for (int b = 0; b < 2; ++b) {
      SchedulerOptions so;
      so.budget = TotalCost(p) * o.budget_fractions[b];
      if (!ValidateProblem(p, so).ok()) continue;
      opt_sum[b] += SelectExact(p, so)->objective;
      paper_sum[b] += SelectActivationProbability(p, so)->objective;
      alone_sum[b] += SelectStandalone(p, so)->objective;
      ++trials[b];
    }
  }
  EXPECT_EQ(r->total_trials + r->skipped, 10);
  for (int b = 0; b < 2; ++b) {
    ASSERT_EQ(r->trials[b], trials[b]);
    ASSERT_GT(trials[b], 0);
    EXPECT_NEAR(r->rules[0].mean_objective[b], opt_sum[b] / trials[b], 1e-12);
    EXPECT_NEAR(r->rules[2].mean_objective[b], paper_sum[b] / trials[b], 1e-12);
    EXPECT_NEAR(r->rules[3].mean_objective[b], alone_sum[b] / trials[b], 1e-12);
    EXPECT_DOUBLE_EQ(r->rules[0].mean_ratio[b], 1.0);
  }
  for (const auto& rule : r->rules) {
    ASSERT_EQ(rule.ratios.size(), static_cast<std::size_t>(r->total_trials));
    for (double x : rule.ratios) EXPECT_LE(x, 1 + 1e-12) << rule.name;
  }
  EXPECT_DOUBLE_EQ(r->rules[0].optimal_share, 1.0);
}

TEST(SchedulingSimTest, RejectsBadOptions) {
  SchedulingSimOptions o;
  o.models = 21;
  EXPECT_NE(RunSchedulingSimulation(o).status().message().find("models=21 outside [1, 20]"),
            std::string::npos);
  o.models = 5;
  o.instances = 0;
  EXPECT_FALSE(RunSchedulingSimulation(o).ok());
  o.instances = 1;
  o.budget_fractions = {0.5, 1.5};
  EXPECT_NE(RunSchedulingSimulation(o).status().message().find("outside (0, 1]"),
            std::string::npos);
}

}  // namespace
}  // namespace mlink::edge
