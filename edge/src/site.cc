#include "mlink/edge/site.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "mlink/common/log.h"

namespace mlink::edge {

using Clock = std::chrono::steady_clock;

namespace {

double Ms(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); }

// Aligned rows (one ModelOutput per model) -> one column per model.
std::vector<link::Column> Columns(const std::vector<ModelInfo>& infos, const std::vector<std::vector<ModelOutput>>& rows) {
  std::vector<link::Column> cols(infos.size());
  for (std::size_t i = 0; i < infos.size(); ++i) {
    cols[i].kind = infos[i].format.kind;
    cols[i].dim = infos[i].format.dim;
    for (const auto& r : rows) {
      if (cols[i].kind == link::FormatKind::kVector) {
        cols[i].values.insert(cols[i].values.end(), r[i].vec.begin(), r[i].vec.end());
      } else {
        cols[i].seqs.push_back(r[i].tokens);
      }
    }
  }
  return cols;
}

}  // namespace

Site::~Site() {
  if (learner_) learner_->Stop();
  if (own_sink_ && sink_) std::fclose(sink_);
}

Result<std::unique_ptr<Site>> Site::Create(const EdgeOptions& o) {
  if (!o.has_source) return Status::InvalidArgument("site '" + o.site + "': no 'source' configured");
  if (o.models.size() < 2) return Status::InvalidArgument("site '" + o.site + "': serving needs at least 2 models, got " + std::to_string(o.models.size()));
  std::unique_ptr<Site> s(new Site());
  s->options_ = o;
  for (const auto& c : o.models) {
    MLINK_ASSIGN_OR_RETURN(auto m, CreateModel(c));
    s->infos_.push_back(m->info());
    s->models_.push_back(std::move(m));
  }
  double total_declared = 0, min_declared = 1e300;
  for (const auto& i : s->infos_) {
    total_declared += i.declared_cost;
    if (i.declared_cost > 0) min_declared = std::min(min_declared, i.declared_cost);
  }
  if (o.serving.budget_ms > 0 && min_declared < 1e300 && o.serving.budget_ms < min_declared) {
    return Status::InvalidArgument("site '" + o.site + "': budget_ms " + std::to_string(o.serving.budget_ms) +
                                   " cannot run even the cheapest model (" + std::to_string(min_declared) + " ms declared)");
  }
  MLINK_ASSIGN_OR_RETURN(s->source_, FrameSource::Open(o.source));
  if (o.serving.sink == "-") {
    s->sink_ = stdout;
  } else {
    s->sink_ = std::fopen(o.serving.sink.c_str(), "a");
    if (!s->sink_) return Status::PermissionDenied("site '" + o.site + "': cannot open sink " + o.serving.sink + " for appending");
    s->own_sink_ = true;
  }
  s->costs_.assign(s->infos_.size(), 0.0);
  s->active_.assign(s->infos_.size(), true);

  LearningOptions lo = o.learning;
  for (auto& f : lo.federation.links) {
    if (f.spec_given) continue;
    for (const auto& i : s->infos_) {
      if (i.name == f.source) f.spec.source = i.format;
      if (i.name == f.target) {
        f.spec.target = i.format;
        f.spec.task = i.task;
      }
    }
    if (f.target == "oracle") {
      f.spec.target = link::OutputFormat::Vector(lo.oracle.dim);
      f.spec.task = lo.oracle.task;
    }
  }
  lo.federation.site = o.site;
  for (std::size_t i = 0; i < s->infos_.size(); ++i) {
    if (lo.oracle_enabled && s->infos_[i].name == lo.oracle.model) s->oracle_model_ = static_cast<int>(i);
  }
  MLINK_ASSIGN_OR_RETURN(s->learner_, Learner::Start(o.site, o.data_dir, s->infos_, lo));
  MLINK_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(lo.sampling));
  s->sampler_ = std::make_unique<Sampler>(sampler);
  // Links saved by an earlier run serve at once (no bootstrap); the first profiling period
  // measures their performance.
  auto saved = LinkServing::Load(o.data_dir + "/links", s->infos_);
  if (saved.ok()) {
    s->serving_ = std::move(saved).value();
    s->learner_->SetServing(s->serving_);
    s->performance_.assign(s->infos_.size(), std::vector<double>(s->infos_.size(), 0.5));
    MLOG_INFO("edge", "links loaded from an earlier run").Kv("site", o.site).Kv("folder", o.data_dir + "/links");
  } else if (saved.status().code() != StatusCode::kNotFound) {
    MLOG_WARN("edge", "saved links not used; training anew").Kv("site", o.site).Kv("why", saved.status().message());
  }
  return s;
}

Status Site::Bootstrap(const std::vector<std::vector<ModelOutput>>& rows) {
  link::TrainOptions t;
  t.epochs = options_.serving.link_epochs;
  auto cols = Columns(infos_, rows);
  auto start = Clock::now();
  MLINK_ASSIGN_OR_RETURN(auto trained, LinkServing::Train(infos_, cols, t, options_.serving.link_threads));
  serving_ = std::move(trained);
  learner_->SetServing(serving_);
  MLINK_ASSIGN_OR_RETURN(performance_, serving_->LinkPerformance(cols));
  performance_known_ = true;
  MLOG_INFO("edge", "links trained").Kv("site", options_.site).Kv("frames", rows.size())
      .Kv("links", infos_.size() * (infos_.size() - 1)).Kv("threads", options_.serving.link_threads)
      .Kv("seconds", Ms(start, Clock::now()) / 1000);
  return Reselect();
}

Status Site::Reselect() {
  const std::size_t k = infos_.size();
  if (options_.serving.budget_ms <= 0) {
    active_.assign(k, true);
    return Status::Ok();
  }
  SchedulingProblem p;
  p.costs = costs_;
  for (auto& c : p.costs) c = std::max(c, 1e-3);
  p.link_performance = performance_;
  for (const auto& i : infos_) p.names.push_back(i.name);
  SchedulerOptions so;
  so.budget = options_.serving.budget_ms;
  so.ensemble_gain = options_.serving.ensemble_gain;
  so.mode = options_.serving.scheduler == "activation_probability" ? SchedulerOptions::Mode::kActivationProbability
                                                                   : SchedulerOptions::Mode::kMarginalGain;
  auto sel = Select(p, so);
  if (!sel.ok()) return sel.status().WithContext("site '" + options_.site + "'");
  active_ = sel->active;
  auto line = MLOG_INFO("edge", "active set selected");
  line.Kv("site", options_.site).Kv("objective", sel->objective).Kv("cost_ms", sel->cost).Kv("budget_ms", so.budget);
  std::string names;
  for (std::size_t i = 0; i < k; ++i) {
    if (active_[i]) names += (names.empty() ? "" : ",") + infos_[i].name;
  }
  line.Kv("active", names);
  return Status::Ok();
}

Status Site::Emit(const Frame& frame, const std::vector<ModelOutput>& outputs, const std::vector<bool>& run,
                  const std::vector<float>* oracle, const std::string& oracle_choice) {
  nlohmann::json j;
  j["site"] = options_.site;
  j["frame"] = frame.index;
  j["ts"] = frame.timestamp_s;
  nlohmann::json models = nlohmann::json::object();
  for (std::size_t i = 0; i < infos_.size(); ++i) {
    nlohmann::json m;
    if (infos_[i].format.kind == link::FormatKind::kVector) {
      m["value"] = outputs[i].vec;
    } else {
      m["tokens"] = outputs[i].tokens;
    }
    m["run"] = static_cast<bool>(run[i]);
    models[infos_[i].name] = m;
  }
  j["models"] = models;
  if (oracle) {
    j["oracle"] = {{"model", options_.learning.oracle.model}, {"value", *oracle}, {"link", oracle_choice}};
  }
  std::string line = j.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), sink_) != line.size()) {
    return Status::OutOfRange("site '" + options_.site + "': writing to sink " + options_.serving.sink + " failed (disk full?)");
  }
  std::fflush(sink_);
  return Status::Ok();
}

Result<ServeStats> Site::Run(const std::atomic<bool>* stop, int64_t max_frames) {
  const std::size_t k = infos_.size();
  const auto& so = options_.serving;
  ServeStats st;
  st.runs.assign(k, 0);
  st.predicted.assign(k, 0);
  std::vector<std::vector<ModelOutput>> boot_rows, profile_rows;
  int64_t in_period = 0;
  while (!(stop && stop->load()) && (max_frames == 0 || st.frames < max_frames)) {
    auto next = source_->Next();
    if (!next.ok()) {
      MLOG_WARN("edge", "no frame").Kv("site", options_.site).Kv("error", next.status().message());
      if (source_->kind() == FrameSource::Kind::kFile || source_->kind() == FrameSource::Kind::kFolder) return next.status();
      continue;  // a live source keeps reconnecting
    }
    if (!next->has_value()) break;
    const Frame& frame = **next;
    if (auto latest = learner_->serving(); latest && latest != serving_) serving_ = std::move(latest);  // online re-training
    const bool bootstrapping = !serving_;
    const bool profiling = bootstrapping || in_period < so.profile_frames;
    std::vector<bool> run = profiling ? std::vector<bool>(k, true) : active_;
    std::vector<ModelOutput> outputs(k);
    std::vector<bool> tried(k, false);
    auto run_models = [&] {
    for (std::size_t i = 0; i < k; ++i) {
      if (!run[i] || tried[i]) continue;
      tried[i] = true;
      auto t0 = Clock::now();
      auto r = models_[i]->Run(frame);
      double ms = Ms(t0, Clock::now());
      st.model_ms += ms;
      if (!r.ok()) {
        ++st.failures;
        run[i] = false;
        MLOG_WARN("edge", "model failed; predicting it for this frame").Kv("model", infos_[i].name).Kv("frame", frame.index).Kv("error", r.status().message());
        continue;
      }
      outputs[i] = std::move(r).value();
      if (infos_[i].declared_cost > 0) {
        costs_[i] = infos_[i].declared_cost;
      } else if (costs_[i] == 0) {
        costs_[i] = ms;
      } else {
        UpdateEma(&costs_[i], ms, so.cost_ema);
      }
    }
    };
    run_models();
    auto t_over = Clock::now();
    bool all_ran = true;
    bool any_ran = false;
    for (bool r : run) {
      all_ran = all_ran && r;
      any_ran = any_ran || r;
    }
    if (bootstrapping) {
      if (all_ran) boot_rows.push_back(outputs);
      if (static_cast<int>(boot_rows.size()) >= so.bootstrap_frames) {
        auto t_train = Clock::now();
        MLINK_RETURN_IF_ERROR(Bootstrap(boot_rows));
        double train_ms = Ms(t_train, Clock::now());
        st.training_ms += train_ms;
        st.overhead_ms -= train_ms;  // added back below with the rest of this frame's work
        boot_rows.clear();
        in_period = 0;
      }
    } else {
      if (profiling && all_ran) profile_rows.push_back(outputs);
      if (!all_ran && any_ran) {
        auto pred = serving_->Predict(run, outputs);
        if (pred.ok()) outputs = std::move(pred).value();
      }
      // Active sampling: on a chosen frame the skipped models run too, for link training.
      if (!profiling && !all_ran && any_ran) {
        double score = 0;
        if (sampler_->needs_score()) {
          auto sc = serving_->Score(run, outputs);
          if (sc.ok()) score = sampler_->wants_loss_prediction() ? sc->predicted_loss : sc->uncertainty;
        }
        if (sampler_->Decide(frame.index, score)) {
          ++st.sampled;
          auto t_model = Clock::now();
          std::fill(run.begin(), run.end(), true);
          run_models();
          t_over += Clock::now() - t_model;  // model time is not serving overhead
          all_ran = std::all_of(run.begin(), run.end(), [](bool r) { return r; });
        }
      }
      ++in_period;
      if (in_period == so.profile_frames) {
        // Re-profile: update p(g_ij) from this period's profiling frames, then re-select A.
        if (!profile_rows.empty()) {
          auto perf = serving_->LinkPerformance(Columns(infos_, profile_rows));
          if (perf.ok()) {
            for (std::size_t i = 0; i < k; ++i) {
              for (std::size_t j = 0; j < k; ++j) {
                if (i != j && performance_known_) UpdateEma(&performance_[i][j], (*perf)[i][j], so.cost_ema);
                if (i != j && !performance_known_) performance_[i][j] = (*perf)[i][j];
              }
            }
          }
          profile_rows.clear();
          performance_known_ = true;
        }
        MLINK_RETURN_IF_ERROR(Reselect());
        ++st.periods;
      }
      if (in_period >= so.period_frames) in_period = 0;
    }
    st.overhead_ms += Ms(t_over, Clock::now());
    for (std::size_t i = 0; i < k; ++i) {
      if (run[i]) ++st.runs[i];
      else ++st.predicted[i];
    }
    learner_->Submit(frame.index, frame.timestamp_s, outputs, run, all_ran);
    std::vector<float> oracle_value;
    std::string oracle_choice;
    if (auto oracle = learner_->oracle()) {
      const int m = oracle_model_;
      if (m >= 0 && (run[m] || serving_)) {
        auto v = oracle->Predict(outputs[m]);
        if (v.ok()) {
          oracle_value = std::move(v).value();
          oracle_choice = oracle->choice();
          ++st.oracle_outputs;
        }
      }
    }
    MLINK_RETURN_IF_ERROR(Emit(frame, outputs, run, oracle_choice.empty() ? nullptr : &oracle_value, oracle_choice));
    ++st.frames;
    if (st.frames % 100 == 0) {
      auto line = MLOG_INFO("edge", "progress");
      line.Kv("site", options_.site).Kv("frames", st.frames).Kv("periods", st.periods).Kv("dropped", source_->dropped());
      int64_t runs = 0, preds = 0;
      for (std::size_t i = 0; i < k; ++i) {
        runs += st.runs[i];
        preds += st.predicted[i];
      }
      const LearnerStats ls = learner_->stats();
      line.Kv("models_run", runs).Kv("models_predicted", preds).Kv("sampled", st.sampled).Kv("retrains", ls.retrains)
          .Kv("rounds", ls.rounds_joined).Kv("connected", ls.connected)
          .Kv("overhead_share", st.overhead_ms / std::max(1e-9, st.model_ms));
    }
  }
  st.dropped = source_->dropped();
  st.last_active = active_;
  return st;
}

}  // namespace mlink::edge
