#include "mlink/eval/online.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "mlink/common/log.h"
#include "mlink/edge/link_serving.h"
#include "mlink/edge/sampler.h"
#include "mlink/edge/trace.h"
#include "mlink/link/metrics.h"

namespace mlink::eval {

namespace {

using edge::ModelOutput;

ModelOutput Row(const link::Column& c, std::size_t i) {
  ModelOutput o;
  if (c.kind == link::FormatKind::kVector) {
    o.vec.assign(c.row(i), c.row(i) + c.dim);
  } else {
    o.tokens = c.seqs[i];
  }
  return o;
}

void Append(link::Column* c, const ModelOutput& o) {
  if (c->kind == link::FormatKind::kVector) {
    c->values.insert(c->values.end(), o.vec.begin(), o.vec.end());
  } else {
    c->seqs.push_back(o.tokens);
  }
}

link::Column Empty(const link::Column& like) {
  link::Column c;
  c.kind = like.kind;
  c.dim = like.dim;
  return c;
}

}  // namespace

Result<OnlineResult> RunOnlinePolicies(const OnlineOptions& o) {
  if (o.traces.empty()) return Status::InvalidArgument("online experiment: no trace given");
  MLINK_ASSIGN_OR_RETURN(auto trace, edge::Trace::Open(o.traces[0]));
  MLINK_ASSIGN_OR_RETURN(auto table, trace->Load());
  const auto& infos = trace->models();
  for (std::size_t t = 1; t < o.traces.size(); ++t) {
    MLINK_ASSIGN_OR_RETURN(auto more, edge::Trace::Open(o.traces[t]));
    if (more->models().size() != infos.size()) {
      return Status::InvalidArgument("trace " + o.traces[t] + " has other models than " + o.traces[0]);
    }
    for (std::size_t i = 0; i < infos.size(); ++i) {
      if (more->models()[i].name != infos[i].name) {
        return Status::InvalidArgument("trace " + o.traces[t] + ": model " + std::to_string(i) + " is '" +
                                       more->models()[i].name + "', expected '" + infos[i].name + "'");
      }
    }
    MLINK_ASSIGN_OR_RETURN(auto t2, more->Load());
    const int64_t offset = table.frames.empty() ? 0 : table.frames.back() + 1;
    for (int64_t f : t2.frames) table.frames.push_back(offset + f);
    for (std::size_t i = 0; i < infos.size(); ++i) {
      auto& c = table.outputs[i];
      c.values.insert(c.values.end(), t2.outputs[i].values.begin(), t2.outputs[i].values.end());
      c.seqs.insert(c.seqs.end(), t2.outputs[i].seqs.begin(), t2.outputs[i].seqs.end());
    }
  }
  const std::size_t k = infos.size();
  const std::size_t n = table.frames.size();
  if (n < static_cast<std::size_t>(o.init_frames) + static_cast<std::size_t>(o.segment_frames)) {
    return Status::InvalidArgument("trace " + o.traces[0] + " has " + std::to_string(n) + " usable frames; need at least " +
                                   std::to_string(o.init_frames + o.segment_frames));
  }
  std::vector<bool> active(k, false);
  for (const auto& name : o.active) {
    const int i = trace->ModelIndex(name);
    if (i < 0) return Status::InvalidArgument("active model '" + name + "' is not in trace " + o.traces[0]);
    active[i] = true;
  }
  OnlineResult res;
  for (std::size_t j = 0; j < k; ++j) {
    if (!active[j]) res.predicted.push_back(infos[j].name);
  }
  if (res.predicted.empty() || res.predicted.size() == k) {
    return Status::InvalidArgument("the active set must hold some but not all of the trace's models");
  }
  // Segment ends (exclusive); a short last piece joins the segment before it.
  std::vector<std::size_t> ends;
  for (std::size_t s = o.init_frames; s < n; s += o.segment_frames) ends.push_back(std::min(n, s + o.segment_frames));
  if (ends.size() > 1 && n - ends[ends.size() - 2] < static_cast<std::size_t>(o.segment_frames) / 2) {
    ends.erase(ends.end() - 2);
  }
  for (std::size_t g = 0; g < ends.size(); ++g) {
    const std::size_t first = g == 0 ? o.init_frames : ends[g - 1];
    res.segments.push_back({table.frames[first], table.frames[ends[g] - 1]});
  }

  // The shared starting point: links trained on the first frames.
  std::vector<link::Column> init(k);
  for (std::size_t i = 0; i < k; ++i) {
    init[i] = Empty(table.outputs[i]);
    for (int r = 0; r < o.init_frames; ++r) Append(&init[i], Row(table.outputs[i], r));
  }
  link::TrainOptions t;
  t.epochs = 100;
  t.seed = o.seed;
  MLINK_ASSIGN_OR_RETURN(auto base, edge::LinkServing::Train(infos, init, t));
  t.epochs = o.epochs;

  for (const auto& policy : o.policies) {
    auto start = std::chrono::steady_clock::now();
    edge::SamplerOptions so;
    so.policy = policy == "offline" ? "none" : policy;
    so.budget = o.budget;
    so.period_frames = 100;
    MLINK_ASSIGN_OR_RETURN(edge::Sampler sampler, edge::Sampler::Create(so));
    const bool lp = policy == "loss_prediction";
    // Every policy starts from the same links, continued on the initial frames (the loss policy
    // trains its loss module jointly there).
    MLINK_ASSIGN_OR_RETURN(auto first, base->Retrain(init, t, lp));
    std::shared_ptr<const edge::LinkServing> serving = std::move(first);
    std::vector<link::Column> pool = init;
    int fresh = 0;
    OnlineResult::Policy out;
    out.name = policy;
    std::vector<link::Column> seg_pred(k), seg_true(k);
    auto flush = [&] {
      double sum = 0;
      int count = 0;
      for (std::size_t j = 0; j < k; ++j) {
        if (active[j] || seg_true[j].rows() == 0) continue;
        sum += link::Evaluate(infos[j].task, seg_pred[j], seg_true[j]).performance;
        ++count;
      }
      out.segment_p.push_back(count ? sum / count : 0);
      for (std::size_t j = 0; j < k; ++j) {
        seg_pred[j] = Empty(table.outputs[j]);
        seg_true[j] = Empty(table.outputs[j]);
      }
    };
    for (std::size_t j = 0; j < k; ++j) {
      seg_pred[j] = Empty(table.outputs[j]);
      seg_true[j] = Empty(table.outputs[j]);
    }
    int64_t served = 0;
    for (std::size_t r = o.init_frames; r < n; ++r) {
      std::vector<ModelOutput> outs(k);
      for (std::size_t i = 0; i < k; ++i) {
        if (active[i]) outs[i] = Row(table.outputs[i], r);
      }
      MLINK_ASSIGN_OR_RETURN(auto pred, serving->Predict(active, outs));
      for (std::size_t j = 0; j < k; ++j) {
        if (active[j]) continue;
        Append(&seg_pred[j], pred[j]);
        Append(&seg_true[j], Row(table.outputs[j], r));
      }
      double score = 0;
      if (sampler.needs_score()) {
        MLINK_ASSIGN_OR_RETURN(auto sc, serving->Score(active, pred));
        score = lp ? sc.predicted_loss : sc.uncertainty;
      }
      ++served;
      if (sampler.Decide(table.frames[r], score)) {
        for (std::size_t i = 0; i < k; ++i) Append(&pool[i], Row(table.outputs[i], r));
        if (++fresh >= o.retrain_samples) {
          fresh = 0;
          MLINK_ASSIGN_OR_RETURN(auto next, serving->Retrain(pool, t, lp));
          serving = std::move(next);
          ++out.retrains;
        }
      }
      if (std::find(ends.begin(), ends.end(), r + 1) != ends.end()) flush();
    }
    double sum = 0;
    for (double p : out.segment_p) sum += p;
    out.mean_p = out.segment_p.empty() ? 0 : sum / static_cast<double>(out.segment_p.size());
    out.sampled_share = static_cast<double>(sampler.sampled()) / static_cast<double>(std::max<int64_t>(1, served));
    out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    MLOG_INFO("eval", "online policy done").Kv("policy", policy).Kv("mean_p", out.mean_p).Kv("sampled_share", out.sampled_share)
        .Kv("retrains", out.retrains).Kv("seconds", out.seconds);
    res.policies.push_back(std::move(out));
  }
  return res;
}

std::string OnlineMarkdown(const OnlineResult& r, const OnlineOptions& o) {
  std::ostringstream s;
  char buf[64];
  s << "Traces, played in order:";
  for (const auto& t : o.traces) s << " " << t.substr(t.find_last_of('/') + 1);
  s << ". Active set A = {";
  for (std::size_t i = 0; i < o.active.size(); ++i) s << (i ? ", " : "") << o.active[i];
  s << "}; predicted: ";
  for (std::size_t i = 0; i < r.predicted.size(); ++i) s << (i ? ", " : "") << r.predicted[i];
  s << ". Labeling budget " << o.budget << " of frames; links re-trained every " << o.retrain_samples
    << " new samples (" << o.epochs << " epochs); links initialised on the first " << o.init_frames << " frames.\n\n";
  s << "| frames |";
  for (const auto& p : r.policies) s << " " << p.name << " |";
  s << "\n|---|";
  for (std::size_t i = 0; i < r.policies.size(); ++i) s << "---|";
  s << "\n";
  for (std::size_t g = 0; g < r.segments.size(); ++g) {
    s << "| " << r.segments[g].first << "-" << r.segments[g].second << " |";
    for (const auto& p : r.policies) {
      std::snprintf(buf, sizeof(buf), " %.3f |", g < p.segment_p.size() ? p.segment_p[g] : 0.0);
      s << buf;
    }
    s << "\n";
  }
  s << "| **mean** |";
  for (const auto& p : r.policies) {
    std::snprintf(buf, sizeof(buf), " **%.3f** |", p.mean_p);
    s << buf;
  }
  s << "\n| sampled share |";
  for (const auto& p : r.policies) {
    std::snprintf(buf, sizeof(buf), " %.3f |", p.sampled_share);
    s << buf;
  }
  s << "\n| re-trainings |";
  for (const auto& p : r.policies) s << " " << p.retrains << " |";
  s << "\n";
  return s.str();
}

}  // namespace mlink::eval
