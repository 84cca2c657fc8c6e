#include "mlink/eval/schedule.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>

#include "mlink/common/log.h"
#include "mlink/edge/link_serving.h"
#include "mlink/edge/scheduler.h"
#include "mlink/edge/trace.h"

namespace mlink::eval {

namespace {

link::Column Rows(const link::Column& c, std::size_t from, std::size_t to) {
  std::vector<std::size_t> idx;
  for (std::size_t i = from; i < to; ++i) idx.push_back(i);
  return c.Select(idx);
}

uint64_t Mask(const std::vector<bool>& active) {
  uint64_t m = 0;
  for (std::size_t i = 0; i < active.size(); ++i) m |= uint64_t(active[i]) << i;
  return m;
}

}  // namespace

Result<ScheduleEvalResult> RunScheduleEval(const ScheduleEvalOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (!(o.train_share > 0 && o.train_share < 1)) {
    return Status::InvalidArgument("schedule experiment: train_share must be in (0, 1)");
  }
  MLINK_ASSIGN_OR_RETURN(auto trace, edge::Trace::Open(o.trace));
  MLINK_ASSIGN_OR_RETURN(auto table, trace->Load());
  const auto& infos = trace->models();
  const std::size_t k = infos.size(), n = table.frames.size();
  if (k < 2 || k > 20) {
    return Status::InvalidArgument("trace " + o.trace + " has " + std::to_string(k) +
                                   " models; need 2 to 20");
  }
  const std::size_t n_train = static_cast<std::size_t>(o.train_share * static_cast<double>(n));
  if (n_train < 10 || n - n_train < 10) {
    return Status::InvalidArgument("trace " + o.trace + " has " + std::to_string(n) +
                                   " usable frames: too few to train on " +
                                   std::to_string(n_train) + " and evaluate on the rest");
  }
  ScheduleEvalResult res;
  res.trace = o.trace;
  res.train_frames = n_train;
  res.eval_frames = n - n_train;
  std::vector<link::Column> train, rest;
  for (const auto& c : table.outputs) {
    train.push_back(Rows(c, 0, n_train));
    rest.push_back(Rows(c, n_train, n));
  }
  for (std::size_t i = 0; i < k; ++i) {
    res.models.push_back(infos[i].name);
    res.costs_ms.push_back(std::max(table.mean_latency_ms[i], 1e-3));
    res.total_ms += res.costs_ms.back();
  }
  link::TrainOptions t;
  t.epochs = o.epochs;
  t.seed = o.seed;
  MLOG_INFO("eval", "schedule: training links")
      .Kv("trace", o.trace)
      .Kv("train_frames", n_train)
      .Kv("models", k);
  MLINK_ASSIGN_OR_RETURN(auto serving, edge::LinkServing::Train(infos, train, t));
  MLINK_ASSIGN_OR_RETURN(auto perf, serving->LinkPerformance(train));

  // Ensemble performance on the evaluation frames, cached per (active set, target).
  std::map<std::pair<uint64_t, int>, double> cache;
  Status eval_error;
  auto measured = [&](const std::vector<bool>& active, int target) -> double {
    if (active[target]) return 1.0;
    const auto key = std::make_pair(Mask(active), target);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    auto p = serving->EnsemblePerformance(active, target, rest);
    if (!p.ok()) {
      if (eval_error.ok()) eval_error = p.status();
      return 0.0;
    }
    const double v = std::clamp(*p, 0.0, 1.0);
    cache.emplace(key, v);
    return v;
  };

  edge::SchedulingProblem profiled;
  profiled.costs = res.costs_ms;
  profiled.link_performance = perf;
  profiled.names = res.models;
  edge::SchedulingProblem hindsight = profiled;
  hindsight.ensemble_performance = measured;

  for (double fraction : o.budget_fractions) {
    ScheduleBudgetRow row;
    row.fraction = fraction;
    row.budget_ms = fraction * res.total_ms;
    edge::SchedulerOptions so;
    so.budget = row.budget_ms;
    so.ensemble_gain = o.ensemble_gain;
    if (auto st = edge::ValidateProblem(profiled, so); !st.ok()) {
      return st.WithContext("budget " + std::to_string(fraction) +
                            " of the all-models cost on trace " + o.trace);
    }
    struct Rule {
      const char* name;
      Result<edge::Selection> sel;
    };
    Rule rules[] = {{"standalone", edge::SelectStandalone(profiled, so)},
                    {"activation_probability", edge::SelectActivationProbability(profiled, so)},
                    {"marginal_gain", edge::SelectMarginalGain(profiled, so)},
                    {"hindsight", edge::SelectExact(hindsight, so)}};
    for (auto& r : rules) {
      if (!r.sel.ok()) return r.sel.status().WithContext(std::string("rule ") + r.name);
      ScheduleRuleResult out;
      out.rule = r.name;
      out.active = r.sel->active;
      for (std::size_t i = 0; i < k; ++i) {
        if (out.active[i]) out.cost_ms += res.costs_ms[i];
      }
      const bool predicts = out.rule != "standalone";
      for (std::size_t j = 0; j < k; ++j) {
        out.per_model.push_back(out.active[j] ? 1.0
                                : predicts    ? measured(out.active, static_cast<int>(j))
                                              : 0.0);
        out.accuracy += out.per_model.back();
      }
      out.accuracy /= static_cast<double>(k);
      row.rules.push_back(std::move(out));
    }
    MLINK_RETURN_IF_ERROR(eval_error);
    MLOG_INFO("eval", "schedule: budget done")
        .Kv("fraction", fraction)
        .Kv("standalone", row.rules[0].accuracy)
        .Kv("paper_rule", row.rules[1].accuracy)
        .Kv("marginal_gain", row.rules[2].accuracy)
        .Kv("hindsight", row.rules[3].accuracy);
    res.rows.push_back(std::move(row));
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return res;
}

std::string ScheduleMarkdown(const std::vector<ScheduleEvalResult>& results) {
  std::ostringstream s;
  char buf[256];
  for (const auto& r : results) {
    s << "#### " << r.trace.substr(r.trace.find_last_of('/') + 1) << "\n\n";
    s << "Models (mean latency, ms/frame):";
    for (std::size_t i = 0; i < r.models.size(); ++i) {
      std::snprintf(buf, sizeof(buf), "%s %s %.1f", i ? "," : "", r.models[i].c_str(),
                    r.costs_ms[i]);
      s << buf;
    }
    std::snprintf(buf, sizeof(buf),
                  "; all models %.1f ms/frame. Links trained on the first %zu frames, scored on "
                  "the other %zu.\n\n",
                  r.total_ms, r.train_frames, r.eval_frames);
    s << buf;
    s << "| budget (share of all-models cost) | Standalone acc. | Standalone ms | MLink, paper's "
         "rule acc. | ms | "
         "MLink, marginal gain acc. | ms | hindsight best acc. | ms | marginal gain runs |\n"
      << "|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& row : r.rows) {
      std::snprintf(buf, sizeof(buf), "| %.0f%% (%.1f ms) |", 100 * row.fraction, row.budget_ms);
      s << buf;
      for (const auto& rule : row.rules) {
        std::snprintf(buf, sizeof(buf), " %.3f | %.1f |", rule.accuracy, rule.cost_ms);
        s << buf;
      }
      std::string names;
      for (std::size_t i = 0; i < r.models.size(); ++i) {
        if (row.rules[2].active[i]) names += (names.empty() ? "" : ", ") + r.models[i];
      }
      s << " " << names << " |\n";
    }
    s << "\n";
  }
  return s.str();
}

}  // namespace mlink::eval
