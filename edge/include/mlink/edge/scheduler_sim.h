// The paper's scheduling simulation (Fig. 10): random problems of k models whose link
// performances and costs are drawn from a distribution, solved by every rule of scheduler.h and
// compared with the optimum. Shared by bench_scheduler, `mlink-eval sched-sim` and the tests.
//
// Thread-safety: stateless; RunSchedulingSimulation draws from its own generator.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "mlink/common/status.h"
#include "mlink/edge/scheduler.h"

namespace mlink::edge {

enum class SimDistribution {
  kNormal,  // Normal(0.5, 0.2)
  kBeta,    // Beta(0.5, 0.5): mass near 0 and 1, the paper's "relatively extreme" case
};

// "normal" or "beta".
std::string SimDistributionName(SimDistribution d);

// k models: costs c_i and link performances p(g_ij), i != j, drawn in that order (row by row,
// model i's cost before its row) from `dist`, costs clipped to [0.05, 1], performances to [0, 1].
// No names, no ensemble callback: the default estimate applies.
SchedulingProblem RandomSchedulingProblem(int k, SimDistribution dist, std::mt19937* rng);

// Sum of the costs.
double TotalCost(const SchedulingProblem& problem);

struct SchedulingSimOptions {
  int models = 10;
  SimDistribution dist = SimDistribution::kNormal;
  int instances = 1000;  // random problems; each is solved at every budget
  // Budgets as shares of the problem's total cost (the paper's figure: 10%..60%).
  std::vector<double> budget_fractions = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6};
  double ensemble_gain = 0.02;
  uint32_t seed = 1;
};

// One rule's results: mean objective F (mean output accuracy) per budget, and its ratio to the
// optimum of the same (instance, budget) pair.
struct SimRuleStats {
  std::string name;                    // optimum, marginal_gain, activation_probability, standalone
  std::vector<double> mean_objective;  // per budget fraction
  std::vector<double> mean_ratio;      // per budget fraction (1 for the optimum)
  double overall_mean_ratio = 0;       // over every trial
  double worst_ratio = 1;
  double optimal_share = 0;    // trials where the rule found the optimum (1e-9)
  std::vector<double> ratios;  // every trial's ratio, in trial order
};

struct SchedulingSimResult {
  SchedulingSimOptions options;
  std::vector<int> trials;  // per budget fraction; a budget below the cheapest model is skipped
  int total_trials = 0;
  int skipped = 0;
  // Rules in this order: optimum (SelectExact), marginal_gain (the default), activation_probability
  // (the paper's Algorithm 2), standalone (no links).
  std::vector<SimRuleStats> rules;
  double seconds = 0;
};

// Errors: models outside [1, 20] (the exact solver's limit), instances < 1, a budget fraction
// outside (0, 1]; a solver error is passed on.
Result<SchedulingSimResult> RunSchedulingSimulation(const SchedulingSimOptions& options);

}  // namespace mlink::edge
