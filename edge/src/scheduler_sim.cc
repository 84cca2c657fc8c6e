#include "mlink/edge/scheduler_sim.h"

#include <algorithm>
#include <chrono>

namespace mlink::edge {

std::string SimDistributionName(SimDistribution d) {
  return d == SimDistribution::kBeta ? "beta" : "normal";
}

SchedulingProblem RandomSchedulingProblem(int k, SimDistribution dist, std::mt19937* rng) {
  std::normal_distribution<double> normal(0.5, 0.2);
  // Beta(a, b) = X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b).
  std::gamma_distribution<double> gamma(0.5, 1.0);
  auto draw = [&] {
    if (dist == SimDistribution::kNormal) return normal(*rng);
    double x = gamma(*rng), y = gamma(*rng);
    return x + y > 0 ? x / (x + y) : 0.5;
  };
  SchedulingProblem p;
  p.link_performance.assign(k, std::vector<double>(k, 0.0));
  for (int i = 0; i < k; ++i) {
    p.costs.push_back(std::clamp(draw(), 0.05, 1.0));
    for (int j = 0; j < k; ++j) {
      if (i != j) p.link_performance[i][j] = std::clamp(draw(), 0.0, 1.0);
    }
  }
  return p;
}

double TotalCost(const SchedulingProblem& problem) {
  double s = 0;
  for (double c : problem.costs) s += c;
  return s;
}

Result<SchedulingSimResult> RunSchedulingSimulation(const SchedulingSimOptions& options) {
  if (options.models < 1 || options.models > 20) {
    return Status::InvalidArgument(
        "scheduling simulation: models=" + std::to_string(options.models) +
        " outside [1, 20] (the exact solver's limit)");
  }
  if (options.instances < 1)
    return Status::InvalidArgument("scheduling simulation: instances must be >= 1");
  if (options.budget_fractions.empty())
    return Status::InvalidArgument("scheduling simulation: no budget fractions");
  for (double f : options.budget_fractions) {
    if (!(f > 0 && f <= 1)) {
      return Status::InvalidArgument("scheduling simulation: budget fraction " + std::to_string(f) +
                                     " outside (0, 1]");
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const std::size_t nb = options.budget_fractions.size();
  SchedulingSimResult res;
  res.options = options;
  res.trials.assign(nb, 0);
  const char* names[] = {"optimum", "marginal_gain", "activation_probability", "standalone"};
  for (const char* name : names) {
    SimRuleStats r;
    r.name = name;
    r.mean_objective.assign(nb, 0);
    r.mean_ratio.assign(nb, 0);
    res.rules.push_back(std::move(r));
  }
  std::mt19937 rng(options.seed);
  for (int n = 0; n < options.instances; ++n) {
    const SchedulingProblem p = RandomSchedulingProblem(options.models, options.dist, &rng);
    const double total = TotalCost(p);
    for (std::size_t b = 0; b < nb; ++b) {
      SchedulerOptions o;
      o.budget = total * options.budget_fractions[b];
      o.ensemble_gain = options.ensemble_gain;
      if (!ValidateProblem(p, o).ok()) {
        ++res.skipped;  // budget below the cheapest model
        continue;
      }
      Result<Selection> sel[4] = {SelectExact(p, o), SelectMarginalGain(p, o),
                                  SelectActivationProbability(p, o), SelectStandalone(p, o)};
      for (const auto& s : sel) {
        if (!s.ok()) return s.status();
      }
      const double opt = sel[0]->objective;
      for (int r = 0; r < 4; ++r) {
        SimRuleStats& st = res.rules[r];
        const double ratio = opt > 0 ? sel[r]->objective / opt : 1.0;
        st.mean_objective[b] += sel[r]->objective;
        st.mean_ratio[b] += ratio;
        st.overall_mean_ratio += ratio;
        st.worst_ratio = std::min(st.worst_ratio, ratio);
        st.optimal_share += ratio > 1 - 1e-9;
        st.ratios.push_back(ratio);
      }
      ++res.trials[b];
      ++res.total_trials;
    }
  }
  for (auto& st : res.rules) {
    for (std::size_t b = 0; b < nb; ++b) {
      if (res.trials[b] == 0) continue;
      st.mean_objective[b] /= res.trials[b];
      st.mean_ratio[b] /= res.trials[b];
    }
    if (res.total_trials > 0) {
      st.overall_mean_ratio /= res.total_trials;
      st.optimal_share /= res.total_trials;
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return res;
}

}  // namespace mlink::edge
