// Link serving for one site: for every model j, an ensemble h_{.,j} of the links from every other
// model into j. Given the active set A and the outputs of the models in A, it predicts the
// outputs of the models not in A (Section 3.5: any subset A of the sources).
//
// Thread-safety: Predict and Evaluate are const and may run concurrently; a new LinkServing is
// built (e.g. by background training) and swapped in whole.
#pragma once

#include <memory>
#include <vector>

#include "mlink/edge/model.h"
#include "mlink/link/link.h"
#include "mlink/link/loss_prediction.h"

namespace mlink::edge {

// One model output as a one-row column of that model's format.
link::Column OneRow(const ModelInfo& info, const ModelOutput& output);

class LinkServing {
 public:
  // Trains all pairwise links (see link/batched.h; their training split across `threads`
  // threads, 0 = one per core) and each target's ensemble weights on aligned outputs
  // (outputs[i] is model i's column).
  static Result<std::unique_ptr<LinkServing>> Train(const std::vector<ModelInfo>& models,
                                                    const std::vector<link::Column>& outputs,
                                                    const link::TrainOptions& options, int threads = 1);
  // Online training: continues from this serving's links (each cloned, then trained on the new
  // aligned outputs; jointly with a loss-prediction module when `loss_prediction`), then
  // re-trains every ensemble's weights. This object is untouched; serving swaps in the result.
  Result<std::unique_ptr<LinkServing>> Retrain(const std::vector<link::Column>& outputs,
                                               const link::TrainOptions& options, bool loss_prediction) const;
  // A copy serving `link` for source -> target instead of the current one (e.g. the global link
  // when it validates better on local samples); target's ensemble weights are re-trained on the
  // aligned outputs. Other ensembles are shared copies.
  Result<std::unique_ptr<LinkServing>> ReplaceLink(int source, int target, const link::Link& link,
                                                   const std::vector<link::Column>& outputs,
                                                   const link::TrainOptions& options) const;
  // The link source -> target currently served.
  const link::Link& link(int source, int target) const;

  // Saves every ensemble into `dir` (created); Load checks the models still match.
  Status Save(const std::string& dir) const;
  static Result<std::unique_ptr<LinkServing>> Load(const std::string& dir, const std::vector<ModelInfo>& models);

  std::size_t num_models() const { return models_.size(); }
  const std::vector<ModelInfo>& models() const { return models_; }

  // Outputs of every model: outputs[i] for i in A is passed through, the rest are predicted.
  // Needs at least one active model.
  Result<std::vector<ModelOutput>> Predict(const std::vector<bool>& active, const std::vector<ModelOutput>& outputs) const;

  // p(g_ij): performance of the link i -> j on these aligned outputs; diagonal 1.
  Result<std::vector<std::vector<double>>> LinkPerformance(const std::vector<link::Column>& outputs) const;
  // Performance of target j's ensemble from the sources in `active` on these outputs
  // (1 if j is active).
  Result<double> EnsemblePerformance(const std::vector<bool>& active, int target,
                                     const std::vector<link::Column>& outputs) const;
  const link::Ensemble& ensemble(int target) const { return *ensembles_[target]; }
  bool has_loss_predictors() const { return !loss_.empty(); }

  // Active-sampling scores of one frame served with `active` (see sampler.h): the largest, over
  // the models not in A, of the uncertainty of their predicted outputs, and of the predicted
  // link loss (mean over the active sources; 0 without loss predictors).
  struct Scores {
    double uncertainty = 0;
    double predicted_loss = 0;
  };
  Result<Scores> Score(const std::vector<bool>& active, const std::vector<ModelOutput>& outputs) const;

 private:
  LinkServing() = default;
  std::vector<ModelInfo> models_;
  // Target j's ensemble of `links` (sources {i != j} in order) with weights trained on `outputs`.
  Status AddEnsemble(int j, std::vector<std::unique_ptr<link::Link>> links, const std::vector<link::Column>& outputs,
                     const link::TrainOptions& options);
  // ensembles_[j] has sources {i != j} in increasing order of i. Never changed once built, so
  // copies made by ReplaceLink share the ones they do not touch.
  std::vector<std::shared_ptr<const link::Ensemble>> ensembles_;
  // loss_[j][s]: loss predictor of ensemble j's s-th link (empty unless trained with them).
  std::vector<std::vector<std::shared_ptr<const link::LossPredictor>>> loss_;
};

}  // namespace mlink::edge
