#include "mlink/edge/link_serving.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "mlink/link/batched.h"

namespace mlink::edge {

namespace {

// The source list of target j's ensemble: every model but j.
std::vector<int> Sources(int k, int j) {
  std::vector<int> s;
  for (int i = 0; i < k; ++i) {
    if (i != j) s.push_back(i);
  }
  return s;
}

}  // namespace

link::Column OneRow(const ModelInfo& info, const ModelOutput& o) {
  if (info.format.kind == link::FormatKind::kVector) return link::Column::Vectors(info.format.dim, o.vec);
  return link::Column::Sequences({o.tokens});
}

Status LinkServing::AddEnsemble(int j, std::vector<std::unique_ptr<link::Link>> links,
                                const std::vector<link::Column>& outputs, const link::TrainOptions& options) {
  std::vector<link::Column> inputs;
  for (int i : Sources(static_cast<int>(models_.size()), j)) inputs.push_back(outputs[i]);
  MLINK_ASSIGN_OR_RETURN(auto ens, link::Ensemble::Create(std::move(links)));
  auto rep = ens->TrainWeights(inputs, outputs[j], options);
  if (!rep.ok()) return rep.status().WithContext("ensemble for model '" + models_[j].name + "'");
  ensembles_.push_back(std::move(ens));
  return Status::Ok();
}

Result<std::unique_ptr<LinkServing>> LinkServing::Train(const std::vector<ModelInfo>& models,
                                                        const std::vector<link::Column>& outputs,
                                                        const link::TrainOptions& options, int threads) {
  const int k = static_cast<int>(models.size());
  if (k < 2) return Status::InvalidArgument("link serving needs at least 2 models, got " + std::to_string(k));
  if (static_cast<int>(outputs.size()) != k) return Status::InvalidArgument("link serving: one output column per model expected");
  std::vector<link::ModelOutputSpec> specs;
  for (const auto& m : models) specs.push_back({m.format, m.task});
  link::PairwiseOptions po;
  po.train = options;
  po.threads = threads;
  MLINK_ASSIGN_OR_RETURN(auto pairs, link::TrainPairwise(specs, outputs, po));
  std::map<std::pair<int, int>, std::unique_ptr<link::Link>> by_pair;
  for (auto& p : pairs) by_pair[{p.source, p.target}] = std::move(p.link);

  std::unique_ptr<LinkServing> s(new LinkServing());
  s->models_ = models;
  for (int j = 0; j < k; ++j) {
    std::vector<std::unique_ptr<link::Link>> links;
    for (int i : Sources(k, j)) links.push_back(std::move(by_pair.at({i, j})));
    MLINK_RETURN_IF_ERROR(s->AddEnsemble(j, std::move(links), outputs, options));
  }
  return s;
}

Result<std::unique_ptr<LinkServing>> LinkServing::Retrain(const std::vector<link::Column>& outputs,
                                                          const link::TrainOptions& options, bool loss_prediction) const {
  const int k = static_cast<int>(models_.size());
  if (static_cast<int>(outputs.size()) != k) return Status::InvalidArgument("link serving: one output column per model expected");
  std::unique_ptr<LinkServing> s(new LinkServing());
  s->models_ = models_;
  if (loss_prediction) s->loss_.resize(static_cast<std::size_t>(k));
  for (int j = 0; j < k; ++j) {
    const auto src = Sources(k, j);
    std::vector<std::unique_ptr<link::Link>> links;
    for (std::size_t n = 0; n < src.size(); ++n) {
      auto l = ensembles_[j]->link(n).Clone();
      const std::string what = "link " + models_[src[n]].name + " -> " + models_[j].name;
      if (loss_prediction) {
        auto lp = link::LossPredictor::TrainJointly(l.get(), outputs[src[n]], outputs[j], options);
        if (!lp.ok()) return lp.status().WithContext(what);
        s->loss_[j].push_back(std::shared_ptr<const link::LossPredictor>(std::move(lp).value()));
      } else {
        auto rep = l->Train(outputs[src[n]], outputs[j], options);
        if (!rep.ok()) return rep.status().WithContext(what);
      }
      links.push_back(std::move(l));
    }
    MLINK_RETURN_IF_ERROR(s->AddEnsemble(j, std::move(links), outputs, options));
  }
  return s;
}

const link::Link& LinkServing::link(int source, int target) const {
  const int s = source < target ? source : source - 1;  // index among Sources(k, target)
  return ensembles_[target]->link(static_cast<std::size_t>(s));
}

Result<std::unique_ptr<LinkServing>> LinkServing::ReplaceLink(int source, int target, const link::Link& replacement,
                                                              const std::vector<link::Column>& outputs,
                                                              const link::TrainOptions& options) const {
  const int k = static_cast<int>(models_.size());
  if (source < 0 || target < 0 || source >= k || target >= k || source == target) {
    return Status::InvalidArgument("link serving: no link " + std::to_string(source) + " -> " + std::to_string(target));
  }
  if (replacement.spec().Hash() != link(source, target).spec().Hash()) {
    return Status::InvalidArgument("link serving: the replacement for " + models_[source].name + " -> " +
                                   models_[target].name + " has another spec");
  }
  std::unique_ptr<LinkServing> s(new LinkServing());
  s->models_ = models_;
  s->loss_ = loss_;
  for (int j = 0; j < k; ++j) {
    if (j != target) {
      s->ensembles_.push_back(ensembles_[j]);  // untouched: shared
      continue;
    }
    std::vector<std::unique_ptr<link::Link>> links;
    const auto src = Sources(k, j);
    for (std::size_t n = 0; n < src.size(); ++n) {
      const bool swap = src[n] == source;
      links.push_back(swap ? replacement.Clone() : ensembles_[j]->link(n).Clone());
      if (swap && !s->loss_.empty()) s->loss_[j][n] = nullptr;  // trained on the old link's features
    }
    MLINK_RETURN_IF_ERROR(s->AddEnsemble(j, std::move(links), outputs, options));
  }
  return s;
}

namespace {
std::string Manifest(const std::vector<ModelInfo>& models) {
  std::string m;
  for (const auto& i : models) {
    m += i.name + " " + std::to_string(static_cast<int>(i.format.kind)) + " " + std::to_string(i.format.dim) + " " +
         std::to_string(i.format.vocab) + " " + std::to_string(i.format.max_len) + " " +
         std::to_string(static_cast<int>(i.task)) + "\n";
  }
  return m;
}
}  // namespace

Status LinkServing::Save(const std::string& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::PermissionDenied("cannot create link folder " + dir + ": " + ec.message());
  for (std::size_t j = 0; j < ensembles_.size(); ++j) {
    const std::string path = dir + "/ensemble-" + models_[j].name + ".bin";
    MLINK_RETURN_IF_ERROR(ensembles_[j]->Save(path + ".tmp"));
    std::filesystem::rename(path + ".tmp", path, ec);
    if (ec) return Status::PermissionDenied("cannot write " + path + ": " + ec.message());
  }
  // The manifest goes last: a folder without one (a crash while saving) is not loaded.
  std::ofstream m(dir + "/models.txt.tmp", std::ios::trunc);
  m << Manifest(models_);
  m.close();
  if (!m) return Status::PermissionDenied("cannot write " + dir + "/models.txt (disk full or read-only?)");
  std::filesystem::rename(dir + "/models.txt.tmp", dir + "/models.txt", ec);
  if (ec) return Status::PermissionDenied("cannot write " + dir + "/models.txt: " + ec.message());
  return Status::Ok();
}

Result<std::unique_ptr<LinkServing>> LinkServing::Load(const std::string& dir, const std::vector<ModelInfo>& models) {
  std::ifstream m(dir + "/models.txt");
  if (!m) return Status::NotFound("no saved links in " + dir);
  std::string saved((std::istreambuf_iterator<char>(m)), std::istreambuf_iterator<char>());
  if (saved != Manifest(models)) {
    return Status::FailedPrecondition("saved links in " + dir + " were trained for other models or formats; they are not used");
  }
  std::unique_ptr<LinkServing> s(new LinkServing());
  s->models_ = models;
  for (const auto& info : models) {
    auto e = link::Ensemble::Load(dir + "/ensemble-" + info.name + ".bin");
    if (!e.ok()) return e.status().WithContext("saved links in " + dir);
    s->ensembles_.push_back(std::move(e).value());
  }
  return s;
}

Result<LinkServing::Scores> LinkServing::Score(const std::vector<bool>& active, const std::vector<ModelOutput>& outputs) const {
  const int k = static_cast<int>(models_.size());
  if (static_cast<int>(active.size()) != k || static_cast<int>(outputs.size()) != k) {
    return Status::InvalidArgument("link serving: active mask and outputs need one entry per model");
  }
  Scores sc;
  for (int j = 0; j < k; ++j) {
    if (active[j]) continue;
    const ModelInfo& m = models_[j];
    const auto src = Sources(k, j);
    double u = 0;
    if (m.format.kind == link::FormatKind::kVector) {
      const auto& p = outputs[j].vec;
      if (m.task == link::TaskKind::kSingleLabel && p.size() > 1) {
        for (float x : p) u -= x > 0 ? x * std::log(static_cast<double>(x)) : 0.0;
        u /= std::log(static_cast<double>(p.size()));
      } else if (m.task == link::TaskKind::kMultiLabel && !p.empty()) {
        for (float x : p) {
          const double q = std::min(1.0 - 1e-9, std::max(1e-9, static_cast<double>(x)));
          u -= (q * std::log(q) + (1 - q) * std::log(1 - q)) / std::log(2.0);
        }
        u /= static_cast<double>(p.size());
      } else {
        // Counts, regression, boxes: spread of the per-source predictions.
        std::vector<std::vector<float>> preds;
        for (std::size_t n = 0; n < src.size(); ++n) {
          if (!active[src[n]]) continue;
          MLINK_ASSIGN_OR_RETURN(auto c, ensembles_[j]->link(n).Predict(OneRow(models_[src[n]], outputs[src[n]])));
          preds.push_back(c.values);
        }
        for (std::size_t d = 0; d < p.size() && preds.size() > 1; ++d) {
          double mean = 0, var = 0;
          for (const auto& q : preds) mean += q[d];
          mean /= static_cast<double>(preds.size());
          for (const auto& q : preds) var += (q[d] - mean) * (q[d] - mean);
          u += std::sqrt(var / static_cast<double>(preds.size()));
        }
        if (m.task == link::TaskKind::kCount) {
          for (float x : p) u += 2.0 * std::abs(x - std::round(x));
        }
      }
    }
    sc.uncertainty = std::max(sc.uncertainty, u);
    if (!loss_.empty()) {
      double sum = 0;
      int n_active = 0;
      for (std::size_t n = 0; n < src.size(); ++n) {
        if (!active[src[n]] || !loss_[j][n]) continue;
        MLINK_ASSIGN_OR_RETURN(auto l, loss_[j][n]->Predict(ensembles_[j]->link(n), OneRow(models_[src[n]], outputs[src[n]])));
        sum += l.empty() ? 0.0 : l[0];
        ++n_active;
      }
      if (n_active) sc.predicted_loss = std::max(sc.predicted_loss, sum / n_active);
    }
  }
  return sc;
}

Result<std::vector<ModelOutput>> LinkServing::Predict(const std::vector<bool>& active,
                                                      const std::vector<ModelOutput>& outputs) const {
  const int k = static_cast<int>(models_.size());
  if (static_cast<int>(active.size()) != k || static_cast<int>(outputs.size()) != k) {
    return Status::InvalidArgument("link serving: active mask and outputs need one entry per model");
  }
  bool any = false;
  for (bool a : active) any = any || a;
  if (!any) return Status::FailedPrecondition("link serving: no model is active, nothing to predict from");
  std::vector<ModelOutput> out = outputs;
  for (int j = 0; j < k; ++j) {
    if (active[j]) continue;
    std::vector<link::Column> inputs;
    std::vector<bool> present;
    for (int i : Sources(k, j)) {
      present.push_back(active[i]);
      inputs.push_back(active[i] ? OneRow(models_[i], outputs[i]) : link::Column());
    }
    MLINK_ASSIGN_OR_RETURN(link::Column pred, ensembles_[j]->Predict(inputs, present));
    if (pred.kind == link::FormatKind::kVector) {
      out[j].vec = pred.values;
    } else {
      out[j].tokens = pred.seqs.empty() ? std::vector<int32_t>() : pred.seqs[0];
    }
  }
  return out;
}

Result<std::vector<std::vector<double>>> LinkServing::LinkPerformance(const std::vector<link::Column>& outputs) const {
  const int k = static_cast<int>(models_.size());
  std::vector<std::vector<double>> p(k, std::vector<double>(k, 1.0));
  for (int j = 0; j < k; ++j) {
    auto src = Sources(k, j);
    for (std::size_t s = 0; s < src.size(); ++s) {
      MLINK_ASSIGN_OR_RETURN(auto ev, ensembles_[j]->link(s).Evaluate(outputs[src[s]], outputs[j]));
      p[src[s]][j] = ev.performance;
    }
  }
  return p;
}

Result<double> LinkServing::EnsemblePerformance(const std::vector<bool>& active, int target,
                                                const std::vector<link::Column>& outputs) const {
  if (active[target]) return 1.0;
  const int k = static_cast<int>(models_.size());
  std::vector<link::Column> inputs;
  std::vector<bool> present;
  bool any = false;
  for (int i : Sources(k, target)) {
    present.push_back(active[i]);
    any = any || active[i];
    inputs.push_back(active[i] ? outputs[i] : link::Column());
  }
  if (!any) return 0.0;
  MLINK_ASSIGN_OR_RETURN(auto ev, ensembles_[target]->Evaluate(inputs, outputs[target], present));
  return ev.performance;
}

}  // namespace mlink::edge
