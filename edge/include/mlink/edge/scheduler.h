// Which models a camera site runs under a cost budget (the paper's Eq. 1, Section 5).
//
// k black-box models f_0..f_{k-1} with costs c_i > 0 share one budget B. Models in the active
// set A run exactly (performance 1); every other model j is predicted from A's outputs through
// the ensemble link h_{A,j}. The scheduler picks A to maximise the mean output accuracy
//
//   F(A) = (1/k) * ( |A| + sum_{j not in A} p(h_{A,j}) ),   F(empty) = 0,
//
// subject to cost(A) = sum_{i in A} c_i + link_cost * |A| * (k - |A|) <= B, where the second
// term charges every link g_ij that serves a prediction (i in A, j not in A).
//
// p(h_{A,j}) comes from the caller's profiled ensembles (SchedulingProblem::ensemble_performance)
// or, by default, from pairwise link performances only (EstimateEnsemblePerformance): the best
// source's p(g_ij) plus SchedulerOptions::ensemble_gain for each further source with
// p(g_ij) > 0, clipped to 1. This is the paper's Fig. 10 simulation model.
//
// Selection rules, all on the same objective so that their results compare:
//   SelectMarginalGain          default: cost-benefit greedy on F with seeds and swaps.
//   SelectActivationProbability the paper's Algorithm 2: greedy on P_i of Eq. 7.
//   SelectExact                 branch and bound, k <= 20; the reference optimum.
//   SelectStandalone            baseline without links: the cheapest models that fit.
//
// Thread-safety: every function here is reentrant and keeps no state between calls; concurrent
// calls are safe when they do not share a mutable problem. A caller-supplied
// ensemble_performance callback is invoked synchronously on the calling thread only.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "mlink/common/status.h"

namespace mlink::edge {

// Predicted performance of `target` from the models marked in `active`, in [0, 1]. Called only
// with a non-empty active set that excludes `target`; must be deterministic, and should be
// nondecreasing in the active set (the paper's assumption; the greedy rules rely on it for
// quality, SelectExact does not).
using EnsemblePerformanceFn = std::function<double(const std::vector<bool>& active, int target)>;

// link_performance[i][j] = p(g_ij): how well model i's output predicts model j's, in [0, 1].
// The diagonal is ignored (a model that runs has performance 1 for itself).
using PerformanceMatrix = std::vector<std::vector<double>>;

// The input of one scheduling decision. Plain data; the Select* functions only read it.
struct SchedulingProblem {
  std::vector<double> costs;           // c_i, finite and > 0; size k >= 1
  PerformanceMatrix link_performance;  // k x k, off-diagonal entries in [0, 1]
  std::vector<std::string> names;      // optional: empty, or k names used in error messages
  // Optional profiled ensembles; when empty the default estimate is used. The Select* functions
  // reject a value outside [0, 1] (or NaN) with kInvalidArgument naming the target.
  EnsemblePerformanceFn ensemble_performance;
};

struct SchedulerOptions {
  double budget = 0;            // B, in the unit of the costs (ms per frame, MiB of GPU memory)
  double ensemble_gain = 0.02;  // default estimate: gain per extra source, in [0, 1]
  double link_cost = 0;         // cost of one serving link g_ij, >= 0
  enum class Mode {
    kMarginalGain,           // SelectMarginalGain
    kActivationProbability,  // SelectActivationProbability (the paper's rule)
    kExact,                  // SelectExact
    kStandalone,             // SelectStandalone
  };
  Mode mode = Mode::kMarginalGain;  // used by Select() only
};

struct Selection {
  std::vector<bool> active;  // size k; true = run the model, false = predict it
  double objective = 0;      // F(active) as defined above, in [0, 1]
  double cost = 0;           // cost(active), <= budget (up to a 1e-9 relative tolerance)
};

// Checks the problem and options; the message names the offending model or entry. Among the
// errors: budget below the cheapest model ("budget B=0.1 cannot run even the cheapest model
// 'det' (cost 0.2)"), costs <= 0 or not finite, entries outside [0, 1], a matrix not k x k.
Status ValidateProblem(const SchedulingProblem& problem, const SchedulerOptions& options);

// The default estimate of p(h_{A,target}) from pairwise link performances: max over i in A,
// i != target, of p(g_i,target) plus ensemble_gain per further source with p > 0, clipped to 1;
// 0 when no source has p > 0. Precondition: a valid k x k matrix and |active| == k.
double EstimateEnsemblePerformance(const PerformanceMatrix& link_performance, double ensemble_gain,
                                   const std::vector<bool>& active, int target);

// F(active) and cost(active) as defined at the top of this file. Precondition:
// ValidateProblem(problem, options) is OK and |active| == k. Callback values are clipped into
// [0, 1] here (the Select* functions reject them instead).
double Objective(const SchedulingProblem& problem, const SchedulerOptions& options,
                 const std::vector<bool>& active);
double SelectionCost(const SchedulingProblem& problem, const SchedulerOptions& options,
                     const std::vector<bool>& active);

// The paper's activation probability (Eq. 5-7): P_i = (1 + P1_i - P2_i) / (w * c_i) with
// P1_i = mean_{j != i} p(g_ij) (how well f_i predicts the others), P2_i = mean_{j != i} p(g_ji)
// (how well the others predict f_i) and w = 2 / min_j c_j, so that P_i lies in [0, 1].
// P1 = P2 = 0 when k == 1. Precondition: a valid problem. O(k^2).
std::vector<double> ActivationProbabilities(const SchedulingProblem& problem);

// The paper's Algorithm 2, line 5: adds models in decreasing P_i (ties: lower index first),
// skipping any whose addition would exceed the budget. Ignores ensemble_performance when
// choosing (the rule only reads pairwise links) but reports F with it. O(k^2).
Result<Selection> SelectActivationProbability(const SchedulingProblem& problem,
                                              const SchedulerOptions& options);

// Cost-benefit greedy: repeatedly adds the model with the largest gain in F per unit of added
// cost that fits, until nothing fits or nothing gains. To guard the worst case (the greedy alone
// can be arbitrarily bad under a knapsack constraint) it also completes greedily from every
// single-model seed (k <= 64) and every pair seed (k <= 16), keeps the best, then applies
// improving one-for-one swaps (k <= 64). For larger k it compares the plain greedy with the
// best single model. With the default estimate and link_cost == 0 the greedy re-evaluates
// gains lazily (a stale gain is nearly an upper bound because F is close to submodular), which
// makes k = 1000 take milliseconds; otherwise every step evaluates every candidate (O(k^3)
// estimates, or O(k^3) callback calls, per greedy run).
Result<Selection> SelectMarginalGain(const SchedulingProblem& problem,
                                     const SchedulerOptions& options);

// The optimum of Eq. 1 by depth-first branch and bound over all subsets; kOutOfRange for
// k > 20. With the default estimate it prunes by an upper bound that relies on the estimate
// being monotone (it is); with a callback it enumerates every subset (2^k * k calls) so that no
// monotonicity is assumed. Ties keep the first optimum found, seeded with SelectMarginalGain.
Result<Selection> SelectExact(const SchedulingProblem& problem, const SchedulerOptions& options);

// Baseline without model links: runs the cheapest models that fit (maximising the number run)
// and predicts nothing, so objective = |A| / k and cost = sum of c_i (no link costs).
Result<Selection> SelectStandalone(const SchedulingProblem& problem,
                                   const SchedulerOptions& options);

// Dispatches on options.mode.
Result<Selection> Select(const SchedulingProblem& problem, const SchedulerOptions& options);

// Exponential moving average for profiled link performances between periods:
// *value = (1 - alpha) * *value + alpha * sample, with alpha in (0, 1]. A non-finite *value
// (no history yet) takes the sample as is, so callers can start from NaN.
void UpdateEma(double* value, double sample, double alpha);

}  // namespace mlink::edge
