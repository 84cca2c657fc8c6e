#include "mlink/edge/link_serving.h"

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

link::Column OneRow(const ModelInfo& info, const ModelOutput& o) {
  if (info.format.kind == link::FormatKind::kVector) return link::Column::Vectors(info.format.dim, o.vec);
  return link::Column::Sequences({o.tokens});
}

}  // namespace

Result<std::unique_ptr<LinkServing>> LinkServing::Train(const std::vector<ModelInfo>& models,
                                                        const std::vector<link::Column>& outputs,
                                                        const link::TrainOptions& options) {
  const int k = static_cast<int>(models.size());
  if (k < 2) return Status::InvalidArgument("link serving needs at least 2 models, got " + std::to_string(k));
  if (static_cast<int>(outputs.size()) != k) return Status::InvalidArgument("link serving: one output column per model expected");
  std::vector<link::ModelOutputSpec> specs;
  for (const auto& m : models) specs.push_back({m.format, m.task});
  link::PairwiseOptions po;
  po.train = options;
  MLINK_ASSIGN_OR_RETURN(auto pairs, link::TrainPairwise(specs, outputs, po));
  std::map<std::pair<int, int>, std::unique_ptr<link::Link>> by_pair;
  for (auto& p : pairs) by_pair[{p.source, p.target}] = std::move(p.link);

  std::unique_ptr<LinkServing> s(new LinkServing());
  s->models_ = models;
  for (int j = 0; j < k; ++j) {
    std::vector<std::unique_ptr<link::Link>> links;
    std::vector<link::Column> inputs;
    for (int i : Sources(k, j)) {
      links.push_back(std::move(by_pair.at({i, j})));
      inputs.push_back(outputs[i]);
    }
    MLINK_ASSIGN_OR_RETURN(auto ens, link::Ensemble::Create(std::move(links)));
    auto rep = ens->TrainWeights(inputs, outputs[j], options);
    if (!rep.ok()) return rep.status().WithContext("ensemble for model '" + models[j].name + "'");
    s->ensembles_.push_back(std::move(ens));
  }
  return s;
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
