// Scheduling on recorded video against the Standalone baseline (the paper's Table 5 form).
//
// A trace (`mlink-edge record`) holds every model's output and latency on every frame. As in the
// paper's Section 6.6, the first `train_share` of the frames trains the links and their ensembles
// and profiles the link performances p(g_ij); model costs are the trace's mean latencies. At each
// budget (a share of the cost of running every model), each rule picks an active set from what
// was profiled, and the set is scored on the remaining frames: a model that runs has output
// accuracy 1, a predicted one the measured performance of its ensemble from the active models,
// and one that produces nothing (Standalone does not predict) 0. Reported: the mean output
// accuracy over the models and the compute the active set uses.
//
// Rules: standalone (the cheapest models that fit, no links), activation_probability (the
// paper's Algorithm 2), marginal_gain (the site's default), and hindsight (the best active set
// under the budget scored on the evaluation frames themselves: an upper bound no scheduler can
// know in advance).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mlink/common/status.h"

namespace mlink::eval {

struct ScheduleEvalOptions {
  std::string trace;  // recorded by `mlink-edge record`
  double train_share = 0.1;
  std::vector<double> budget_fractions = {0.2, 0.4, 0.6, 0.8};
  int epochs = 100;  // link training (early stopping on validation)
  double ensemble_gain = 0.02;
  uint64_t seed = 1;
};

struct ScheduleRuleResult {
  std::string rule;               // standalone, activation_probability, marginal_gain, hindsight
  std::vector<bool> active;       // per model
  double cost_ms = 0;             // sum of the active models' mean latencies
  double accuracy = 0;            // mean output accuracy over all models on the evaluation frames
  std::vector<double> per_model;  // each model's output accuracy
};

struct ScheduleBudgetRow {
  double fraction = 0;  // of the all-models cost
  double budget_ms = 0;
  std::vector<ScheduleRuleResult> rules;  // in the order listed at the top
};

struct ScheduleEvalResult {
  std::string trace;
  std::vector<std::string> models;
  std::vector<double> costs_ms;  // mean latency per model
  double total_ms = 0;           // all models
  std::size_t train_frames = 0, eval_frames = 0;
  std::vector<ScheduleBudgetRow> rows;
  double seconds = 0;
};

// Errors name the trace; a budget below the cheapest model is an error naming the fraction.
Result<ScheduleEvalResult> RunScheduleEval(const ScheduleEvalOptions& options);

// One Markdown table per trace: budgets as rows; accuracy and compute of each rule as columns.
std::string ScheduleMarkdown(const std::vector<ScheduleEvalResult>& results);

}  // namespace mlink::eval
