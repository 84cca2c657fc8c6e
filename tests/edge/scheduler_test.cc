#include "mlink/edge/scheduler.h"
#include "mlink/edge/scheduler_sim.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

namespace mlink::edge {
namespace {

using Mode = SchedulerOptions::Mode;

// Three models worked out by hand (objective = total / 3, ensemble gain 0.02):
//   A (cost 1): A->B 0.9, A->C 0.6     {A}    1 + 0.9 + 0.6          = 2.50
//   B (cost 1): B->A 0.5, B->C 0.7     {B}    1 + 0.5 + 0.7          = 2.20
//   C (cost 2): C->A 0.8, C->B 0.8     {C}    1 + 0.8 + 0.8          = 2.60
//                                      {A,B}  2 + max(.6,.7) + .02   = 2.72
//                                      {A,C}  2 + max(.9,.8) + .02   = 2.92
//                                      {B,C}  2 + max(.5,.8) + .02   = 2.82
SchedulingProblem ThreeModels() {
  SchedulingProblem p;
  p.names = {"A", "B", "C"};
  p.costs = {1, 1, 2};
  p.link_performance = {{0, 0.9, 0.6}, {0.5, 0, 0.7}, {0.8, 0.8, 0}};
  return p;
}

SchedulerOptions Budget(double b) {
  SchedulerOptions o;
  o.budget = b;
  return o;
}

std::vector<bool> Set(std::initializer_list<int> on, int k) {
  std::vector<bool> v(k, false);
  for (int i : on) v[i] = true;
  return v;
}

// Brute force straight from the public definitions, independent of SelectExact.
double BruteForceOptimum(const SchedulingProblem& p, const SchedulerOptions& o) {
  const int k = static_cast<int>(p.costs.size());
  double best = 0;
  std::vector<bool> active(k);
  for (uint32_t mask = 0; mask < (1u << k); ++mask) {
    for (int i = 0; i < k; ++i) active[i] = (mask >> i) & 1u;
    if (SelectionCost(p, o, active) > o.budget * (1 + 1e-9) + 1e-9) continue;
    best = std::max(best, Objective(p, o, active));
  }
  return best;
}

// The paper's Fig. 10 model (edge/scheduler_sim.h, shared with the benchmark and mlink-eval).
SchedulingProblem RandomProblem(int k, bool beta, std::mt19937* rng) {
  return RandomSchedulingProblem(k, beta ? SimDistribution::kBeta : SimDistribution::kNormal, rng);
}

TEST(SchedulerTest, HandMadeOptimumAtEachBudget) {
  SchedulingProblem p = ThreeModels();
  struct Case {
    double budget;
    std::vector<bool> expected;
    double total;
  };
  for (const Case& c : {Case{1.5, Set({0}, 3), 2.5}, Case{2, Set({0, 1}, 3), 2.72},
                        Case{3, Set({0, 2}, 3), 2.92}, Case{4, Set({0, 1, 2}, 3), 3.0}}) {
    SCOPED_TRACE(c.budget);
    for (Mode mode : {Mode::kExact, Mode::kMarginalGain}) {
      SchedulerOptions o = Budget(c.budget);
      o.mode = mode;
      Result<Selection> s = Select(p, o);
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_EQ(s->active, c.expected);
      EXPECT_NEAR(s->objective, c.total / 3, 1e-12);
      EXPECT_NEAR(s->cost, SelectionCost(p, o, c.expected), 1e-12);
    }
  }
}

TEST(SchedulerTest, SeedsRepairTheCostBenefitGreedy) {
  // At B=3 the plain greedy takes A (ratio 2.5), then B (0.22 per unit) over C (0.42 / 2 =
  // 0.21) and stops at {A,B} = 2.72; the single seed {C} completes to the optimum {A,C} = 2.92.
  SchedulingProblem p = ThreeModels();
  Result<Selection> s = SelectMarginalGain(p, Budget(3));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->active, Set({0, 2}, 3));
  EXPECT_NEAR(s->objective, 2.92 / 3, 1e-12);
}

TEST(SchedulerTest, LinkCostsCountAgainstTheBudgetAndAreNotMonotone) {
  // link_cost 0.1: {A,C} costs 3 + 0.1 * 2 * 1 = 3.2, {A,B} 2.2, {C} 2.2, all three 4 (no
  // serving links). At B=3 the best affordable set is {A,B}; at B=4 all three run.
  SchedulingProblem p = ThreeModels();
  SchedulerOptions o = Budget(3);
  o.link_cost = 0.1;
  EXPECT_NEAR(SelectionCost(p, o, Set({0, 2}, 3)), 3.2, 1e-12);
  EXPECT_NEAR(SelectionCost(p, o, Set({0, 1, 2}, 3)), 4.0, 1e-12);
  for (auto select : {&SelectExact, &SelectMarginalGain}) {
    Result<Selection> s = select(p, o);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->active, Set({0, 1}, 3));
    EXPECT_NEAR(s->cost, 2.2, 1e-12);
    EXPECT_NEAR(s->objective, 2.72 / 3, 1e-12);
  }
  o.budget = 4;
  Result<Selection> all = SelectMarginalGain(p, o);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->active, Set({0, 1, 2}, 3));
  EXPECT_DOUBLE_EQ(all->objective, 1.0);
}

TEST(SchedulerTest, DefaultEnsembleEstimate) {
  SchedulingProblem p = ThreeModels();
  // Target C from {A,B}: best 0.7 plus one extra source.
  EXPECT_NEAR(EstimateEnsemblePerformance(p.link_performance, 0.02, Set({0, 1}, 3), 2), 0.72,
              1e-12);
  // A zero-performance source adds nothing, and the estimate clips at 1.
  PerformanceMatrix m = {{0, 0, 0.99}, {0, 0, 0}, {0, 0, 0}};
  EXPECT_NEAR(EstimateEnsemblePerformance(m, 0.02, Set({0, 1}, 3), 2), 0.99, 1e-12);
  m[1][2] = 0.5;
  EXPECT_DOUBLE_EQ(EstimateEnsemblePerformance(m, 0.02, Set({0, 1}, 3), 2), 1.0);
  EXPECT_DOUBLE_EQ(EstimateEnsemblePerformance(m, 0.02, Set({}, 3), 2), 0.0);
  EXPECT_DOUBLE_EQ(Objective(p, Budget(4), Set({}, 3)), 0.0);
}

TEST(SchedulerTest, ExactMatchesBruteForce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    const int k = 2 + trial % 9;
    SchedulingProblem p = RandomProblem(k, trial % 2 == 1, &rng);
    SchedulerOptions o = Budget(TotalCost(p) * (0.1 + 0.1 * (trial % 6)));
    o.link_cost = trial % 3 == 0 ? 0.01 : 0;
    if (!ValidateProblem(p, o).ok()) continue;
    SCOPED_TRACE(trial);
    Result<Selection> s = SelectExact(p, o);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_NEAR(s->objective, BruteForceOptimum(p, o), 1e-9);
    EXPECT_LE(s->cost, o.budget * (1 + 1e-9));
    EXPECT_NEAR(s->objective, Objective(p, o, s->active), 1e-12);
  }
}

TEST(SchedulerTest, ExactWithProfiledEnsemblesMatchesBruteForce) {
  // A callback that is not monotone: the exact solver must not rely on a bound.
  std::mt19937 rng(11);
  SchedulingProblem p = RandomProblem(8, false, &rng);
  p.ensemble_performance = [](const std::vector<bool>& active, int target) {
    uint32_t h = 2166136261u ^ static_cast<uint32_t>(target);
    for (bool b : active) h = (h ^ (b ? 1u : 0u)) * 16777619u;
    return (h % 1000) / 999.0;
  };
  SchedulerOptions o = Budget(TotalCost(p) * 0.4);
  Result<Selection> s = SelectExact(p, o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_NEAR(s->objective, BruteForceOptimum(p, o), 1e-12);
  Result<Selection> g = SelectMarginalGain(p, o);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_LE(g->objective, s->objective + 1e-12);
}

TEST(SchedulerTest, BudgetEdgeCases) {
  SchedulingProblem p;
  p.costs = {0.1, 0.2, 0.3};
  p.link_performance = {{0, 0.5, 0.5}, {0.5, 0, 0.5}, {0.5, 0.5, 0}};
  // 0.1 + 0.2 + 0.3 = 0.6000000000000001 in doubles: a budget of exactly the total still runs all.
  for (auto select :
       {&SelectExact, &SelectMarginalGain, &SelectActivationProbability, &SelectStandalone}) {
    Result<Selection> s = select(p, Budget(0.6));
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->active, Set({0, 1, 2}, 3));
    EXPECT_DOUBLE_EQ(s->objective, 1.0);
  }
  // Exactly the cheapest model: only it fits.
  for (auto select :
       {&SelectExact, &SelectMarginalGain, &SelectActivationProbability, &SelectStandalone}) {
    Result<Selection> s = select(p, Budget(0.1));
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->active, Set({0}, 3));
  }
  // Far above the total: everything.
  Result<Selection> s = SelectMarginalGain(p, Budget(1e9));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->active, Set({0, 1, 2}, 3));
  // Just below the cheapest: a clear error.
  Result<Selection> none = SelectMarginalGain(p, Budget(0.09));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(none.status().message(),
            "budget B=0.09 cannot run even the cheapest model model 0 (cost 0.1)");
  // A single model: runs when it fits.
  SchedulingProblem one;
  one.costs = {2};
  one.link_performance = {{0}};
  Result<Selection> only = SelectMarginalGain(one, Budget(2));
  ASSERT_TRUE(only.ok()) << only.status();
  EXPECT_EQ(only->active, Set({0}, 1));
  EXPECT_DOUBLE_EQ(only->objective, 1.0);
  EXPECT_DOUBLE_EQ(ActivationProbabilities(one)[0], 0.5);  // (1 + 0 - 0) / (2 / 2 * 2)
}

TEST(SchedulerTest, ActivationProbabilityMatchesHandComputation) {
  // P1 = (0.75, 0.6, 0.8), P2 = (0.65, 0.85, 0.65), w = 2 / 1:
  // P_A = 1.1 / 2 = 0.55, P_B = 0.75 / 2 = 0.375, P_C = 1.15 / 4 = 0.2875.
  SchedulingProblem p = ThreeModels();
  std::vector<double> prob = ActivationProbabilities(p);
  ASSERT_EQ(prob.size(), 3u);
  EXPECT_NEAR(prob[0], 0.55, 1e-12);
  EXPECT_NEAR(prob[1], 0.375, 1e-12);
  EXPECT_NEAR(prob[2], 0.2875, 1e-12);
  // Order A, B, C: at B=3 the rule takes A and B and cannot afford C, short of the optimum.
  Result<Selection> s = SelectActivationProbability(p, Budget(3));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->active, Set({0, 1}, 3));
  EXPECT_NEAR(s->objective, 2.72 / 3, 1e-12);
}

TEST(SchedulerTest, ActivationProbabilitySkipsWhatDoesNotFit) {
  // Y predicts everyone perfectly and nobody predicts Y: P_Y = (1 + 1 - 0) / (2 * 1.5) = 2/3,
  // P_X = (1 + 0.2 - 0.6) / 2 = 0.3, P_Z = (1 + 0.1 - 0.7) / 2 = 0.2.
  SchedulingProblem p;
  p.names = {"X", "Y", "Z"};
  p.costs = {1, 1.5, 1};
  p.link_performance = {{0, 0, 0.4}, {1, 0, 1}, {0.2, 0, 0}};
  std::vector<double> prob = ActivationProbabilities(p);
  EXPECT_NEAR(prob[0], 0.3, 1e-12);
  EXPECT_NEAR(prob[1], 2.0 / 3, 1e-12);
  EXPECT_NEAR(prob[2], 0.2, 1e-12);
  Result<Selection> s = SelectActivationProbability(p, Budget(1.2));  // Y skipped, then X, Z no
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->active, Set({0}, 3));
  s = SelectActivationProbability(p, Budget(2.5));  // Y, then X; Z would need 3.5
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->active, Set({0, 1}, 3));
  EXPECT_NEAR(s->cost, 2.5, 1e-12);
}

TEST(SchedulerTest, StandaloneRunsTheCheapestAndPredictsNothing) {
  SchedulingProblem p = ThreeModels();
  Result<Selection> s = SelectStandalone(p, Budget(3));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->active, Set({0, 1}, 3));
  EXPECT_NEAR(s->objective, 2.0 / 3, 1e-12);
  EXPECT_NEAR(s->cost, 2.0, 1e-12);
}

TEST(SchedulerTest, ValidationNamesTheProblem) {
  auto error = [](const SchedulingProblem& p, const SchedulerOptions& o) {
    Result<Selection> s = SelectMarginalGain(p, o);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << s.status();
    return s.status().message();
  };
  SchedulingProblem p = ThreeModels();
  EXPECT_EQ(error(p, Budget(0.5)), "budget B=0.5 cannot run even the cheapest model 'A' (cost 1)");

  SchedulingProblem bad = p;
  bad.costs[1] = 0;
  EXPECT_EQ(error(bad, Budget(3)), "cost of 'B' is 0; costs must be finite and > 0");
  bad.costs[1] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(error(bad, Budget(3)), "cost of 'B' is nan; costs must be finite and > 0");

  bad = p;
  bad.link_performance[2][0] = 1.5;
  EXPECT_EQ(error(bad, Budget(3)),
            "link performance [2][0] from 'C' to 'A' is 1.5; expected a value in [0, 1]");
  bad.link_performance[2][0] = -0.1;
  EXPECT_NE(error(bad, Budget(3)).find("is -0.1"), std::string::npos);
  bad.link_performance[2][0] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(error(bad, Budget(3)).find("is nan"), std::string::npos);
  bad = p;
  bad.link_performance[1][1] = std::numeric_limits<double>::quiet_NaN();  // diagonal: ignored
  bad.link_performance[2][2] = 7;
  for (auto select : {&SelectExact, &SelectMarginalGain, &SelectActivationProbability}) {
    Result<Selection> s = select(bad, Budget(3));
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->objective, select(p, Budget(3))->objective);
  }

  bad = p;
  bad.link_performance.pop_back();
  EXPECT_EQ(error(bad, Budget(3)), "link_performance has 2 rows for 3 models (expected 3 x 3)");
  bad = p;
  bad.link_performance[1].push_back(0.5);
  EXPECT_EQ(error(bad, Budget(3)), "link_performance row 1 ('B') has 4 entries, expected 3");

  bad = p;
  bad.names = {"A"};
  EXPECT_EQ(error(bad, Budget(3)), "names has 1 entries for 3 models");
  EXPECT_EQ(error(SchedulingProblem{}, Budget(3)), "scheduling problem has no models");

  SchedulerOptions o = Budget(3);
  o.ensemble_gain = -1;
  EXPECT_EQ(error(p, o), "ensemble_gain is -1; expected a value in [0, 1]");
  o = Budget(3);
  o.link_cost = -1;
  EXPECT_EQ(error(p, o), "link_cost is -1; expected a finite value >= 0");
  EXPECT_EQ(error(p, Budget(std::numeric_limits<double>::infinity())),
            "budget must be finite, got inf");

  bad = p;
  bad.ensemble_performance = [](const std::vector<bool>&, int target) {
    return target == 2 ? 1.5 : 0.5;
  };
  EXPECT_EQ(error(bad, Budget(2)),
            "ensemble_performance returned 1.5 for target 'C'; expected a value in [0, 1]");

  std::mt19937 rng(3);
  SchedulingProblem big = RandomProblem(21, false, &rng);
  Result<Selection> exact = SelectExact(big, Budget(TotalCost(big) / 2));
  ASSERT_FALSE(exact.ok());
  EXPECT_EQ(exact.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(exact.status().message().find("k=21 exceeds the limit of 20"), std::string::npos);
}

// The acceptance bar of the default rule on the paper's Fig. 10 simulation: >= 0.99 of the
// optimum on average and >= 0.9 in the worst trial, for both distributions.
TEST(SchedulerTest, MarginalGainIsNearOptimalOnRandomInstances) {
  for (bool beta : {false, true}) {
    SCOPED_TRACE(beta ? "beta" : "normal");
    std::mt19937 rng(beta ? 2024 : 42);
    double sum = 0, worst = 1, paper_sum = 0;
    int n = 0;
    while (n < 200) {
      SchedulingProblem p = RandomProblem(10, beta, &rng);
      SchedulerOptions o = Budget(TotalCost(p) * (0.1 + 0.1 * (n % 6)));
      if (!ValidateProblem(p, o).ok()) continue;
      Result<Selection> opt = SelectExact(p, o);
      Result<Selection> ours = SelectMarginalGain(p, o);
      Result<Selection> paper = SelectActivationProbability(p, o);
      ASSERT_TRUE(opt.ok() && ours.ok() && paper.ok());
      ASSERT_LE(ours->objective, opt->objective + 1e-12);
      ASSERT_LE(ours->cost, o.budget * (1 + 1e-9));
      double ratio = ours->objective / opt->objective;
      sum += ratio;
      paper_sum += paper->objective / opt->objective;
      worst = std::min(worst, ratio);
      ++n;
    }
    EXPECT_GE(sum / n, 0.99);
    EXPECT_GE(worst, 0.9);
    EXPECT_GE(sum, paper_sum);  // never worse than the paper's rule on average
  }
}

TEST(SchedulerTest, LazyGreedyAgreesWithFullEvaluation) {
  // Beyond the seed and swap limits both paths are the plain greedy plus the best single
  // model. Any link cost forces full evaluation; 1e-12 per link changes no ratio that matters.
  std::mt19937 rng(5);
  for (int trial = 0; trial < 4; ++trial) {
    SchedulingProblem p = RandomProblem(80, trial % 2 == 1, &rng);
    SchedulerOptions o = Budget(TotalCost(p) * (trial < 2 ? 0.05 : 0.3));
    o.ensemble_gain = trial < 2 ? 0.0 : 0.02;  // 0: far from saturation, many greedy steps
    Result<Selection> lazy = SelectMarginalGain(p, o);
    o.link_cost = 1e-12;
    Result<Selection> full = SelectMarginalGain(p, o);
    ASSERT_TRUE(lazy.ok() && full.ok());
    EXPECT_NEAR(lazy->objective, full->objective, 1e-3 * full->objective);
    EXPECT_LE(lazy->cost, o.budget * (1 + 1e-9));
  }
}

TEST(SchedulerTest, ManyModelsWithinBudget) {
  std::mt19937 rng(9);
  SchedulingProblem p = RandomProblem(400, false, &rng);
  SchedulerOptions o = Budget(TotalCost(p) * 0.3);
  Result<Selection> ours = SelectMarginalGain(p, o);
  Result<Selection> paper = SelectActivationProbability(p, o);
  ASSERT_TRUE(ours.ok() && paper.ok());
  EXPECT_LE(ours->cost, o.budget * (1 + 1e-9));
  EXPECT_LE(paper->cost, o.budget * (1 + 1e-9));
  EXPECT_GE(ours->objective, paper->objective);
  EXPECT_NEAR(ours->objective, Objective(p, o, ours->active), 1e-9);
}

TEST(SchedulerTest, UpdateEma) {
  double v = std::numeric_limits<double>::quiet_NaN();
  UpdateEma(&v, 0.8, 0.1);
  EXPECT_DOUBLE_EQ(v, 0.8);  // no history: the first sample
  UpdateEma(&v, 0.4, 0.5);
  EXPECT_DOUBLE_EQ(v, 0.6);
  UpdateEma(&v, 0.0, 1.0);
  EXPECT_DOUBLE_EQ(v, 0.0);
}

}  // namespace
}  // namespace mlink::edge
