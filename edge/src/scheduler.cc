#include "mlink/edge/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <queue>
#include <utility>

namespace mlink::edge {
namespace {

constexpr int kExactMaxModels = 20;
// Partial enumeration sizes: pair seeds cost O(k^2) greedy runs, single seeds O(k), swaps
// O(k^2) objective evaluations per round; the limits keep SelectMarginalGain within
// milliseconds while covering the model counts a site actually runs.
constexpr int kPairSeedMaxModels = 16;
constexpr int kSingleSeedMaxModels = 64;
constexpr int kSwapMaxModels = 64;
// Every swap round strictly improves F, so rounds are finite; the cap only guards against
// rounding making two sets look better than each other.
constexpr int kMaxSwapRounds = 64;
// Costs summed in different orders differ in the last bits; a set costing exactly B must fit.
constexpr double kBudgetTolerance = 1e-9;
// Gains below this are rounding noise, not a reason to run a model.
constexpr double kGainEpsilon = 1e-12;

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

std::string ModelName(const SchedulingProblem& problem, int i) {
  if (!problem.names.empty() && problem.names.size() == problem.costs.size()) {
    return "'" + problem.names[i] + "'";
  }
  return "model " + std::to_string(i);
}

// p(h) of the default estimate from the best source's performance and the number of sources
// with p > 0 (a double so that hot loops stay branch-free; with no source best is 0 and so is
// the result).
inline double EnsembleEstimate(double best, double sources, double gain) {
  return std::min(1.0, best + gain * std::max(sources - 1.0, 0.0));
}

// Kernels over one row segment [begin, end) (callers split rows around the diagonal, which
// is not a link). With k = 1000 a pass touches 10^6 entries, and at -O2 strict IEEE semantics
// keep the compiler from vectorising a floating-point sum or a NaN-aware compare, so these use
// two-lane GCC/Clang vector extensions (SSE2 on x86-64, NEON on arm64) with a scalar tail.
#if !defined(__GNUC__)
#error "scheduler.cc uses GCC/Clang vector extensions"
#endif
using Lanes = double __attribute__((vector_size(2 * sizeof(double))));
constexpr Lanes kZeros = {0.0, 0.0};
constexpr Lanes kOnes = {1.0, 1.0};

inline Lanes LoadLanes(const double* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void StoreLanes(double* p, Lanes v) { std::memcpy(p, &v, sizeof(v)); }
inline Lanes MaxLanes(Lanes a, Lanes b) { return a > b ? a : b; }
inline Lanes MinLanes(Lanes a, Lanes b) { return a < b ? a : b; }

// Adds row[j] to col_sums[j] and to *row_sum; returns whether every entry is in [0, 1]. One
// pass serves the range check and the activation-probability sums. A NaN or infinite entry
// makes the segment's sum non-finite, so min/max (which pass over NaN) suffice for the rest.
bool AccumulateLinks(const double* row, int begin, int end, double* row_sum, double* col_sums) {
  Lanes sum = kZeros, lo = kOnes, hi = kZeros;
  int j = begin;
  for (; j + 2 <= end; j += 2) {
    Lanes x = LoadLanes(row + j);
    StoreLanes(col_sums + j, LoadLanes(col_sums + j) + x);
    sum += x;
    lo = MinLanes(lo, x);
    hi = MaxLanes(hi, x);
  }
  double total = sum[0] + sum[1];
  double min = std::min(lo[0], lo[1]), max = std::max(hi[0], hi[1]);
  for (; j < end; ++j) {
    double x = row[j];
    col_sums[j] += x;
    total += x;
    min = std::min(min, x);
    max = std::max(max, x);
  }
  *row_sum += total;
  return std::isfinite(total) && min >= 0 && max <= 1;
}

// Folds source row into per-target best performance and count of sources with p > 0.
void AddSourceRow(const double* row, int begin, int end, double* best, double* count) {
  int j = begin;
  for (; j + 2 <= end; j += 2) {
    Lanes p = LoadLanes(row + j);
    StoreLanes(best + j, MaxLanes(LoadLanes(best + j), p));
    StoreLanes(count + j, LoadLanes(count + j) + (p > kZeros ? kOnes : kZeros));
  }
  for (; j < end; ++j) {
    best[j] = std::max(best[j], row[j]);
    count[j] += row[j] > 0 ? 1.0 : 0.0;
  }
}

// Sum over targets j of weight[j] * (estimate with row's model added - predicted[j]).
// Branch-free: a p = 0 entry changes neither best nor count.
double GainOverRow(const double* row, int begin, int end, const double* best, const double* count,
                   const double* predicted, const double* weight, double gain) {
  const Lanes g = {gain, gain};
  Lanes sum = kZeros;
  int j = begin;
  for (; j + 2 <= end; j += 2) {
    Lanes p = LoadLanes(row + j);
    Lanes sources = LoadLanes(count + j) + (p > kZeros ? kOnes : kZeros);
    Lanes h =
        MinLanes(kOnes, MaxLanes(LoadLanes(best + j), p) + g * MaxLanes(sources - kOnes, kZeros));
    sum += (h - LoadLanes(predicted + j)) * LoadLanes(weight + j);
  }
  double total = sum[0] + sum[1];
  for (; j < end; ++j) {
    double p = row[j];
    double h = EnsembleEstimate(std::max(best[j], p), count[j] + (p > 0 ? 1.0 : 0.0), gain);
    total += (h - predicted[j]) * weight[j];
  }
  return total;
}

// Evaluates cost and k * F for one validated problem. Records the first out-of-range callback
// value so that the Select* functions can report it instead of scheduling on garbage.
class Evaluator {
 public:
  Evaluator(const SchedulingProblem& problem, const SchedulerOptions& options)
      : problem_(problem), options_(options), k_(static_cast<int>(problem.costs.size())) {}

  int k() const { return k_; }
  bool has_callback() const { return static_cast<bool>(problem_.ensemble_performance); }
  const PerformanceMatrix& perf() const { return problem_.link_performance; }
  double gain() const { return options_.ensemble_gain; }
  double model_cost(int i) const { return problem_.costs[i]; }
  const Status& status() const { return status_; }

  double LinkCost(int num_active) const {
    return options_.link_cost * num_active * (k_ - num_active);
  }
  bool Fits(double cost) const {
    return cost <= options_.budget + kBudgetTolerance * std::max(1.0, std::abs(options_.budget));
  }
  double Cost(const std::vector<bool>& active) const {
    double sum = 0;
    int n = 0;
    for (int i = 0; i < k_; ++i) {
      if (active[i]) {
        sum += problem_.costs[i];
        ++n;
      }
    }
    return sum + LinkCost(n);
  }

  // p(h_{A,target}) for a non-empty A that excludes target.
  double Predicted(const std::vector<bool>& active, int target) {
    if (!has_callback()) {
      return EstimateEnsemblePerformance(problem_.link_performance, options_.ensemble_gain, active,
                                         target);
    }
    double v = problem_.ensemble_performance(active, target);
    if (!(v >= 0 && v <= 1)) {
      if (status_.ok()) {
        status_ =
            Status::InvalidArgument("ensemble_performance returned " + Num(v) + " for target " +
                                    ModelName(problem_, target) + "; expected a value in [0, 1]");
      }
      v = std::isnan(v) ? 0 : std::clamp(v, 0.0, 1.0);
    }
    return v;
  }

  // k * F(active): the sum of per-model performances.
  double Total(const std::vector<bool>& active) {
    std::vector<int> sources;
    for (int i = 0; i < k_; ++i) {
      if (active[i]) sources.push_back(i);
    }
    if (sources.empty()) return 0;
    double total = static_cast<double>(sources.size());
    if (has_callback()) {
      for (int j = 0; j < k_; ++j) {
        if (!active[j]) total += Predicted(active, j);
      }
      return total;
    }
    // Same as EstimateEnsemblePerformance for every target, accumulated source row by source
    // row so that the O(k * |A|) reads are sequential.
    std::vector<double> best(k_, 0.0), count(k_, 0.0);
    for (int i : sources) {
      const double* row = problem_.link_performance[i].data();
      AddSourceRow(row, 0, i, best.data(), count.data());
      AddSourceRow(row, i + 1, k_, best.data(), count.data());
    }
    for (int j = 0; j < k_; ++j) {
      if (!active[j]) total += EnsembleEstimate(best[j], count[j], options_.ensemble_gain);
    }
    return total;
  }

 private:
  const SchedulingProblem& problem_;
  const SchedulerOptions& options_;
  int k_;
  Status status_;
};

// An active set grown one model at a time with O(k) gain queries under the default estimate
// (per-target best source and source count are kept), or callback evaluations otherwise.
class GreedyState {
 public:
  explicit GreedyState(Evaluator* ev)
      : ev_(ev),
        active_(ev->k(), false),
        best_(ev->k(), 0.0),
        count_(ev->k(), 0.0),
        predicted_(ev->k(), 0.0),
        weight_(ev->k(), 1.0) {}

  const std::vector<bool>& active() const { return active_; }
  bool is_active(int i) const { return active_[i]; }
  int size() const { return num_active_; }
  double total() const { return total_; }
  double cost() const { return cost_sum_ + ev_->LinkCost(num_active_); }
  double CostWith(int i) const {
    return cost_sum_ + ev_->model_cost(i) + ev_->LinkCost(num_active_ + 1);
  }

  // k * (F(A + i) - F(A)). Precondition: i not active.
  double Gain(int i) {
    if (ev_->has_callback()) {
      active_[i] = true;
      double t = ev_->Total(active_);
      active_[i] = false;
      return t - total_;
    }
    const double* row = ev_->perf()[i].data();
    const double g = ev_->gain();
    return (1.0 - predicted_[i]) +
           GainOverRow(row, 0, i, best_.data(), count_.data(), predicted_.data(), weight_.data(),
                       g) +
           GainOverRow(row, i + 1, ev_->k(), best_.data(), count_.data(), predicted_.data(),
                       weight_.data(), g);
  }

  void Add(int i) {
    if (ev_->has_callback()) {
      active_[i] = true;
      total_ = ev_->Total(active_);
    } else {
      total_ += Gain(i);
      active_[i] = true;
      weight_[i] = 0;
      const double* row = ev_->perf()[i].data();
      AddSourceRow(row, 0, i, best_.data(), count_.data());
      AddSourceRow(row, i + 1, ev_->k(), best_.data(), count_.data());
      for (int j = 0; j < ev_->k(); ++j) {
        predicted_[j] = EnsembleEstimate(best_[j], count_[j], ev_->gain());
      }
    }
    ++num_active_;
    cost_sum_ += ev_->model_cost(i);
  }

 private:
  Evaluator* ev_;
  std::vector<bool> active_;
  int num_active_ = 0;
  double cost_sum_ = 0;
  double total_ = 0;
  // Default estimate only: per target, best source performance, number of sources with p > 0,
  // the resulting estimate, and 0 for running models (they are not predicted) else 1.
  std::vector<double> best_;
  std::vector<double> count_;
  std::vector<double> predicted_;
  std::vector<double> weight_;
};

// Every model at performance 1: nothing can gain, so stop before re-evaluating everyone.
bool Saturated(const Evaluator& ev, const GreedyState& s) {
  return s.total() >= ev.k() - kGainEpsilon;
}

// Every step evaluates every affordable candidate. Needed when link costs make the added cost
// depend on |A| (a shared denominator shift reorders candidates) or when a callback may be far
// from submodular.
void GreedyFull(Evaluator* ev, GreedyState* s) {
  const int k = ev->k();
  while (!Saturated(*ev, *s)) {
    int pick = -1;
    double pick_ratio = -1, pick_gain = 0;
    const double base = s->cost();
    for (int i = 0; i < k; ++i) {
      if (s->is_active(i)) continue;
      double c = s->CostWith(i);
      if (!ev->Fits(c)) continue;
      double gain = s->Gain(i);
      if (gain <= kGainEpsilon) continue;
      double added = c - base;
      // Adding a model can lower the link cost; a free gain beats any ratio.
      double ratio = added > 0 ? gain / added : std::numeric_limits<double>::infinity();
      if (ratio > pick_ratio || (ratio == pick_ratio && gain > pick_gain)) {
        pick = i;
        pick_ratio = ratio;
        pick_gain = gain;
      }
    }
    if (pick < 0) return;
    s->Add(pick);
  }
}

// Lazy (CELF) greedy for the default estimate without link costs: a candidate's gain only
// shrinks as A grows, up to ensemble_gain for sources with p < ensemble_gain, so a stale gain
// is an upper bound in practice and only the top candidate needs re-evaluation. Costs are
// additive here, so a candidate that does not fit now never will. `singles`, when given for an
// empty state, holds each model's gain from the empty set (-1 = does not fit alone).
void GreedyLazy(Evaluator* ev, GreedyState* s, const std::vector<double>* singles) {
  const int k = ev->k();
  struct Entry {
    double ratio;
    int model;
    bool operator<(const Entry& o) const {
      return ratio < o.ratio || (ratio == o.ratio && model > o.model);
    }
  };
  std::vector<Entry> entries;
  entries.reserve(k);
  std::vector<int> evaluated_at(k, -1);
  int step = 0;
  const bool reuse = singles != nullptr && s->size() == 0;
  for (int i = 0; i < k; ++i) {
    if (s->is_active(i) || !ev->Fits(s->CostWith(i))) continue;
    entries.push_back({(reuse ? (*singles)[i] : s->Gain(i)) / ev->model_cost(i), i});
    evaluated_at[i] = step;
  }
  std::priority_queue<Entry> heap(std::less<Entry>(), std::move(entries));
  while (!heap.empty() && !Saturated(*ev, *s)) {
    Entry top = heap.top();
    heap.pop();
    if (!ev->Fits(s->CostWith(top.model))) continue;
    if (evaluated_at[top.model] == step) {
      if (top.ratio * ev->model_cost(top.model) <= kGainEpsilon) return;
      s->Add(top.model);
      ++step;
      continue;
    }
    double gain = s->Gain(top.model);
    evaluated_at[top.model] = step;
    if (gain <= kGainEpsilon) continue;
    heap.push({gain / ev->model_cost(top.model), top.model});
  }
}

struct Candidate {
  std::vector<bool> active;
  double total = -1;  // k * F; -1 = none yet
};

void Keep(const GreedyState& s, Candidate* best) {
  if (s.total() > best->total + kGainEpsilon) {
    best->active = s.active();
    best->total = s.total();
  }
}

// Greedy completion of a seed set; nullopt when the seed itself does not fit.
std::optional<GreedyState> Complete(Evaluator* ev, const std::vector<int>& seed, bool lazy,
                                    const std::vector<double>* singles = nullptr) {
  GreedyState s(ev);
  for (int m : seed) {
    if (!ev->Fits(s.CostWith(m))) return std::nullopt;
    s.Add(m);
  }
  if (lazy) {
    GreedyLazy(ev, &s, singles);
  } else {
    GreedyFull(ev, &s);
  }
  return s;
}

// Best improving one-for-one exchange, followed by a greedy completion (an exchange may free
// budget), until no exchange improves. Lets the greedy escape a cheap-but-weak early pick.
void ImproveBySwaps(Evaluator* ev, bool lazy, Candidate* best) {
  const int k = ev->k();
  for (int round = 0; round < kMaxSwapRounds; ++round) {
    std::vector<bool> trial = best->active;
    int out = -1, in = -1;
    double top = best->total + kGainEpsilon;
    for (int a = 0; a < k; ++a) {
      if (!best->active[a]) continue;
      for (int b = 0; b < k; ++b) {
        if (best->active[b]) continue;
        trial[a] = false;
        trial[b] = true;
        if (ev->Fits(ev->Cost(trial))) {
          double t = ev->Total(trial);
          if (t > top) {
            top = t;
            out = a;
            in = b;
          }
        }
        trial[a] = true;
        trial[b] = false;
      }
    }
    if (out < 0) return;
    std::vector<int> seed;
    for (int i = 0; i < k; ++i) {
      if ((best->active[i] && i != out) || i == in) seed.push_back(i);
    }
    std::optional<GreedyState> s = Complete(ev, seed, lazy);
    if (!s || s->total() <= best->total + kGainEpsilon) return;
    best->active = s->active();
    best->total = s->total();
  }
}

Selection MakeSelection(Evaluator* ev, std::vector<bool> active) {
  Selection sel;
  sel.objective = ev->Total(active) / ev->k();
  sel.cost = ev->Cost(active);
  sel.active = std::move(active);
  return sel;
}

// Depth-first branch and bound for the default estimate. Models are branched in decreasing
// cost (expensive decisions first prune the most), include before exclude.
class BranchAndBound {
 public:
  BranchAndBound(Evaluator* ev, Candidate incumbent)
      : ev_(ev), k_(ev->k()), best_(std::move(incumbent)) {
    order_.resize(k_);
    std::iota(order_.begin(), order_.end(), 0);
    std::stable_sort(order_.begin(), order_.end(),
                     [&](int a, int b) { return ev->model_cost(a) > ev->model_cost(b); });
    position_.resize(k_);
    for (int d = 0; d < k_; ++d) position_[order_[d]] = d;
    // suffix_best_/suffix_count_[d * k + j]: best p(g_ij) and number of p > 0 over sources
    // order_[d..], i != j; the optimistic estimate of what the undecided models can add.
    suffix_best_.assign((k_ + 1) * k_, 0.0);
    suffix_count_.assign((k_ + 1) * k_, 0);
    for (int d = k_ - 1; d >= 0; --d) {
      int i = order_[d];
      for (int j = 0; j < k_; ++j) {
        double p = i == j ? 0 : ev->perf()[i][j];
        suffix_best_[d * k_ + j] = std::max(suffix_best_[(d + 1) * k_ + j], p);
        suffix_count_[d * k_ + j] = suffix_count_[(d + 1) * k_ + j] + (p > 0 ? 1 : 0);
      }
    }
    // cheapest_prefix_[d][m]: the m cheapest costs among order_[d..] summed.
    cheapest_prefix_.resize(k_ + 1);
    for (int d = 0; d <= k_; ++d) {
      std::vector<double> c;
      for (int e = d; e < k_; ++e) c.push_back(ev->model_cost(order_[e]));
      std::sort(c.begin(), c.end());
      cheapest_prefix_[d].assign(1, 0.0);
      for (double x : c) cheapest_prefix_[d].push_back(cheapest_prefix_[d].back() + x);
    }
    best_buf_.assign((k_ + 1) * k_, 0.0);
    count_buf_.assign((k_ + 1) * k_, 0);
    included_.assign(k_, false);
    gaps_.resize(k_);
  }

  Candidate Run() {
    Dfs(0, best_buf_.data(), count_buf_.data());
    return best_;
  }

 private:
  void Dfs(int d, const double* best, const int* count) {
    // Largest number of further models that some completion can still afford; -1 = none fits.
    int max_more = -1;
    const std::vector<double>& cheapest = cheapest_prefix_[d];
    for (int m = 0; m + d <= k_; ++m) {
      if (ev_->Fits(cost_sum_ + cheapest[m] + ev_->LinkCost(num_active_ + m))) max_more = m;
    }
    if (max_more < 0) return;
    const double g = ev_->gain();
    if (d == k_) {
      double total = num_active_;
      if (num_active_ > 0) {
        for (int j = 0; j < k_; ++j) {
          if (!included_[j]) total += EnsembleEstimate(best[j], count[j], g);
        }
      }
      if (total > best_.total + kGainEpsilon) {
        best_.total = total;
        best_.active = included_;
      }
      return;
    }
    // Upper bound: every non-running model gets the estimate from all undecided sources too
    // (monotone), and the max_more undecided models with the largest shortfall run instead.
    double bound = num_active_;
    int num_gaps = 0;
    for (int j = 0; j < k_; ++j) {
      if (included_[j]) continue;
      double h = EnsembleEstimate(std::max(best[j], suffix_best_[d * k_ + j]),
                                  count[j] + suffix_count_[d * k_ + j], g);
      bound += h;
      if (position_[j] >= d) gaps_[num_gaps++] = 1.0 - h;
    }
    if (max_more >= num_gaps) {
      for (int e = 0; e < num_gaps; ++e) bound += gaps_[e];
    } else if (max_more > 0) {
      std::nth_element(gaps_.begin(), gaps_.begin() + max_more, gaps_.begin() + num_gaps,
                       std::greater<double>());
      for (int e = 0; e < max_more; ++e) bound += gaps_[e];
    }
    if (bound <= best_.total + kGainEpsilon) return;

    const int m = order_[d];
    double* next_best = &best_buf_[(d + 1) * k_];
    int* next_count = &count_buf_[(d + 1) * k_];
    std::copy(best, best + k_, next_best);
    std::copy(count, count + k_, next_count);
    const std::vector<double>& row = ev_->perf()[m];
    for (int j = 0; j < k_; ++j) {
      if (j == m || row[j] <= 0) continue;
      next_best[j] = std::max(next_best[j], row[j]);
      ++next_count[j];
    }
    included_[m] = true;
    ++num_active_;
    cost_sum_ += ev_->model_cost(m);
    Dfs(d + 1, next_best, next_count);
    cost_sum_ -= ev_->model_cost(m);
    --num_active_;
    included_[m] = false;
    // The exclude branch reuses the parent's arrays: descendants only write deeper buffers.
    Dfs(d + 1, best, count);
  }

  Evaluator* ev_;
  int k_;
  Candidate best_;
  std::vector<int> order_, position_;
  std::vector<double> suffix_best_;
  std::vector<int> suffix_count_;
  std::vector<std::vector<double>> cheapest_prefix_;
  std::vector<double> best_buf_;
  std::vector<int> count_buf_;
  std::vector<bool> included_;
  std::vector<double> gaps_;
  int num_active_ = 0;
  double cost_sum_ = 0;
};

// Everything but the range of the link performances, so that a caller that reads the matrix
// anyway can check the range in the same pass.
Status ValidateAllButLinkRange(const SchedulingProblem& problem, const SchedulerOptions& options) {
  const size_t k = problem.costs.size();
  if (k == 0) return Status::InvalidArgument("scheduling problem has no models");
  if (!problem.names.empty() && problem.names.size() != k) {
    return Status::InvalidArgument("names has " + std::to_string(problem.names.size()) +
                                   " entries for " + std::to_string(k) + " models");
  }
  for (size_t i = 0; i < k; ++i) {
    double c = problem.costs[i];
    if (!std::isfinite(c) || c <= 0) {
      return Status::InvalidArgument("cost of " + ModelName(problem, static_cast<int>(i)) + " is " +
                                     Num(c) + "; costs must be finite and > 0");
    }
  }
  if (!std::isfinite(options.budget)) {
    return Status::InvalidArgument("budget must be finite, got " + Num(options.budget));
  }
  if (!(options.ensemble_gain >= 0 && options.ensemble_gain <= 1)) {
    return Status::InvalidArgument("ensemble_gain is " + Num(options.ensemble_gain) +
                                   "; expected a value in [0, 1]");
  }
  if (!std::isfinite(options.link_cost) || options.link_cost < 0) {
    return Status::InvalidArgument("link_cost is " + Num(options.link_cost) +
                                   "; expected a finite value >= 0");
  }
  const PerformanceMatrix& perf = problem.link_performance;
  if (perf.size() != k) {
    return Status::InvalidArgument("link_performance has " + std::to_string(perf.size()) +
                                   " rows for " + std::to_string(k) + " models (expected " +
                                   std::to_string(k) + " x " + std::to_string(k) + ")");
  }
  for (size_t i = 0; i < k; ++i) {
    if (perf[i].size() != k) {
      return Status::InvalidArgument("link_performance row " + std::to_string(i) + " (" +
                                     ModelName(problem, static_cast<int>(i)) + ") has " +
                                     std::to_string(perf[i].size()) + " entries, expected " +
                                     std::to_string(k));
    }
  }
  size_t cheapest = 0;
  for (size_t i = 1; i < k; ++i) {
    if (problem.costs[i] < problem.costs[cheapest]) cheapest = i;
  }
  if (options.budget < problem.costs[cheapest]) {
    return Status::InvalidArgument("budget B=" + Num(options.budget) +
                                   " cannot run even the cheapest model " +
                                   ModelName(problem, static_cast<int>(cheapest)) + " (cost " +
                                   Num(problem.costs[cheapest]) + ")");
  }
  return Status::Ok();
}

// The error for the first off-diagonal entry outside [0, 1]; OK if there is none.
Status FindLinkOutOfRange(const SchedulingProblem& problem) {
  const int k = static_cast<int>(problem.costs.size());
  for (int i = 0; i < k; ++i) {
    for (int j = 0; j < k; ++j) {
      double v = problem.link_performance[i][j];
      if (j != i && !(v >= 0 && v <= 1)) {
        return Status::InvalidArgument("link performance [" + std::to_string(i) + "][" +
                                       std::to_string(j) + "] from " + ModelName(problem, i) +
                                       " to " + ModelName(problem, j) + " is " + Num(v) +
                                       "; expected a value in [0, 1]");
      }
    }
  }
  return Status::Ok();
}

// Row sums (sum_j p(g_ij)) and column sums (sum_j p(g_ji)) over the off-diagonal entries, with
// the range check folded in: returns false if any entry is outside [0, 1].
bool SumLinks(const SchedulingProblem& problem, std::vector<double>* from,
              std::vector<double>* to) {
  const int k = static_cast<int>(problem.costs.size());
  from->assign(k, 0.0);
  to->assign(k, 0.0);
  bool in_range = true;
  for (int i = 0; i < k; ++i) {
    const double* row = problem.link_performance[i].data();
    in_range &= AccumulateLinks(row, 0, i, &(*from)[i], to->data());
    in_range &= AccumulateLinks(row, i + 1, k, &(*from)[i], to->data());
  }
  return in_range;
}

// Eq. 5-7 from the row sums (P1 * (k - 1)) and column sums (P2 * (k - 1)).
std::vector<double> ProbabilitiesFromSums(const SchedulingProblem& problem,
                                          const std::vector<double>& from,
                                          const std::vector<double>& to) {
  const int k = static_cast<int>(problem.costs.size());
  const double min_cost = *std::min_element(problem.costs.begin(), problem.costs.end());
  const double w = 2.0 / min_cost;
  const double others = k > 1 ? k - 1 : 1;
  std::vector<double> probability(k);
  for (int i = 0; i < k; ++i) {
    double p1 = from[i] / others, p2 = to[i] / others;
    probability[i] = (1.0 + p1 - p2) / (w * problem.costs[i]);
  }
  return probability;
}

}  // namespace

Status ValidateProblem(const SchedulingProblem& problem, const SchedulerOptions& options) {
  MLINK_RETURN_IF_ERROR(ValidateAllButLinkRange(problem, options));
  std::vector<double> from, to;  // the fast branch-free pass; locate an offender only on failure
  return SumLinks(problem, &from, &to) ? Status::Ok() : FindLinkOutOfRange(problem);
}

double EstimateEnsemblePerformance(const PerformanceMatrix& link_performance, double ensemble_gain,
                                   const std::vector<bool>& active, int target) {
  double best = 0;
  int count = 0;
  const int k = static_cast<int>(link_performance.size());
  for (int i = 0; i < k; ++i) {
    if (!active[i] || i == target) continue;
    double p = link_performance[i][target];
    if (p > 0) {
      best = std::max(best, p);
      ++count;
    }
  }
  return EnsembleEstimate(best, count, ensemble_gain);
}

double Objective(const SchedulingProblem& problem, const SchedulerOptions& options,
                 const std::vector<bool>& active) {
  Evaluator ev(problem, options);
  return ev.Total(active) / ev.k();
}

double SelectionCost(const SchedulingProblem& problem, const SchedulerOptions& options,
                     const std::vector<bool>& active) {
  return Evaluator(problem, options).Cost(active);
}

std::vector<double> ActivationProbabilities(const SchedulingProblem& problem) {
  std::vector<double> from, to;
  SumLinks(problem, &from, &to);
  return ProbabilitiesFromSums(problem, from, to);
}

Result<Selection> SelectActivationProbability(const SchedulingProblem& problem,
                                              const SchedulerOptions& options) {
  MLINK_RETURN_IF_ERROR(ValidateAllButLinkRange(problem, options));
  std::vector<double> from, to;
  if (!SumLinks(problem, &from, &to)) return FindLinkOutOfRange(problem);
  std::vector<double> probability = ProbabilitiesFromSums(problem, from, to);
  Evaluator ev(problem, options);
  const int k = ev.k();
  std::vector<int> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return probability[a] > probability[b]; });
  std::vector<bool> active(k, false);
  double cost_sum = 0;
  int num_active = 0;
  for (int i : order) {
    double c = cost_sum + problem.costs[i] + ev.LinkCost(num_active + 1);
    if (!ev.Fits(c)) continue;
    active[i] = true;
    cost_sum += problem.costs[i];
    ++num_active;
  }
  Selection sel = MakeSelection(&ev, std::move(active));
  MLINK_RETURN_IF_ERROR(ev.status());
  return sel;
}

Result<Selection> SelectMarginalGain(const SchedulingProblem& problem,
                                     const SchedulerOptions& options) {
  MLINK_RETURN_IF_ERROR(ValidateProblem(problem, options));
  Evaluator ev(problem, options);
  const int k = ev.k();
  const bool lazy = !ev.has_callback() && options.link_cost == 0;
  const bool seed_singles = k <= kSingleSeedMaxModels;
  // k * F({i}) (the gain from the empty set), -1 when i alone does not fit; shared by the lazy
  // greedy's first step and the best-single guard so that O(k^2) pass runs once.
  std::vector<double> singles;
  if (lazy || !seed_singles) {
    GreedyState empty(&ev);
    singles.assign(k, -1.0);
    for (int i = 0; i < k; ++i) {
      if (ev.Fits(empty.CostWith(i))) singles[i] = empty.Gain(i);
    }
  }
  Candidate best;
  if (std::optional<GreedyState> s = Complete(&ev, {}, lazy, lazy ? &singles : nullptr)) {
    Keep(*s, &best);
  }
  if (seed_singles) {
    for (int i = 0; i < k; ++i) {
      if (std::optional<GreedyState> s = Complete(&ev, {i}, lazy)) Keep(*s, &best);
    }
  } else {
    // The classic guard for cost-benefit greedy under a knapsack: the best affordable single
    // model.
    int top = -1;
    double top_total = best.total;
    for (int i = 0; i < k; ++i) {
      if (singles[i] > top_total + kGainEpsilon) {
        top = i;
        top_total = singles[i];
      }
    }
    if (top >= 0) {
      best.active.assign(k, false);
      best.active[top] = true;
      best.total = top_total;
    }
  }
  if (k <= kPairSeedMaxModels) {
    for (int i = 0; i < k; ++i) {
      for (int j = i + 1; j < k; ++j) {
        if (std::optional<GreedyState> s = Complete(&ev, {i, j}, lazy)) Keep(*s, &best);
      }
    }
  }
  if (best.total < 0) best.active.assign(k, false);  // only with link costs: nothing fits
  if (k <= kSwapMaxModels && best.total >= 0) ImproveBySwaps(&ev, lazy, &best);
  Selection sel = MakeSelection(&ev, std::move(best.active));
  MLINK_RETURN_IF_ERROR(ev.status());
  return sel;
}

Result<Selection> SelectExact(const SchedulingProblem& problem, const SchedulerOptions& options) {
  MLINK_RETURN_IF_ERROR(ValidateProblem(problem, options));
  const int k = static_cast<int>(problem.costs.size());
  if (k > kExactMaxModels) {
    return Status::OutOfRange("SelectExact enumerates 2^k subsets; k=" + std::to_string(k) +
                              " exceeds the limit of " + std::to_string(kExactMaxModels) +
                              " (use SelectMarginalGain)");
  }
  Evaluator ev(problem, options);
  Candidate best;
  if (ev.has_callback()) {
    // No monotonicity is promised for profiled ensembles, so no objective bound: enumerate.
    std::vector<bool> active(k);
    for (uint32_t mask = 0; mask < (1u << k); ++mask) {
      for (int i = 0; i < k; ++i) active[i] = (mask >> i) & 1u;
      if (!ev.Fits(ev.Cost(active))) continue;
      double t = ev.Total(active);
      if (t > best.total + kGainEpsilon) {
        best.total = t;
        best.active = active;
      }
    }
    MLINK_RETURN_IF_ERROR(ev.status());
  } else {
    Result<Selection> seed = SelectMarginalGain(problem, options);
    if (!seed.ok()) return seed.status();
    best.active = seed->active;
    best.total = seed->objective * k;
    if (!ev.Fits(seed->cost)) {
      best.total = -1;  // only with link costs: the greedy found nothing affordable
    }
    best = BranchAndBound(&ev, std::move(best)).Run();
  }
  if (best.total < 0) best.active.assign(k, false);
  return MakeSelection(&ev, std::move(best.active));
}

Result<Selection> SelectStandalone(const SchedulingProblem& problem,
                                   const SchedulerOptions& options) {
  MLINK_RETURN_IF_ERROR(ValidateProblem(problem, options));
  Evaluator ev(problem, options);
  const int k = ev.k();
  std::vector<int> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return problem.costs[a] < problem.costs[b]; });
  Selection sel;
  sel.active.assign(k, false);
  int num_active = 0;
  for (int i : order) {
    if (!ev.Fits(sel.cost + problem.costs[i])) break;  // ascending: nothing later fits either
    sel.active[i] = true;
    sel.cost += problem.costs[i];
    ++num_active;
  }
  sel.objective = static_cast<double>(num_active) / k;
  return sel;
}

Result<Selection> Select(const SchedulingProblem& problem, const SchedulerOptions& options) {
  switch (options.mode) {
    case SchedulerOptions::Mode::kMarginalGain:
      return SelectMarginalGain(problem, options);
    case SchedulerOptions::Mode::kActivationProbability:
      return SelectActivationProbability(problem, options);
    case SchedulerOptions::Mode::kExact:
      return SelectExact(problem, options);
    case SchedulerOptions::Mode::kStandalone:
      return SelectStandalone(problem, options);
  }
  return Status::InvalidArgument("unknown scheduler mode " +
                                 std::to_string(static_cast<int>(options.mode)));
}

void UpdateEma(double* value, double sample, double alpha) {
  if (!std::isfinite(*value)) {
    *value = sample;
    return;
  }
  *value += alpha * (sample - *value);
}

}  // namespace mlink::edge
