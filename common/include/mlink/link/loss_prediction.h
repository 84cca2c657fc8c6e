// Learned loss prediction for active sampling ("Learning Loss for Active Learning", Yoo and
// Kweon 2019, as the paper's Section 4.1 uses it): a small module on a link's hidden
// representation predicts the link's loss on a row, and is trained jointly with the link with the
// pairwise margin ranking loss
//   L = L_link + lambda * mean over pairs (a, b) of max(0, -sign(l_a - l_b) (lp_a - lp_b) + margin),
// the pairs being the two halves of each mini-batch. Frames whose predicted loss is high are the
// ones worth running the extra models on. As in that paper, the module's gradient stops flowing
// into the link for the last part of training (`detach_share`), so the ranking objective does not
// pull the link away from its task.
#pragma once

#include <memory>
#include <vector>

#include "mlink/link/link.h"

namespace mlink::link {

struct LossPredictionOptions {
  double margin = 1.0;
  double lambda = 1.0;
  int hidden = 16;              // units of the module's hidden layer
  double detach_share = 0.4;    // final share of epochs in which the link's features are detached
};

class LossPredictor {
 public:
  // Trains `link` (from its current parameters) jointly with a new loss module on aligned rows
  // (options as Link::Train: RMSprop, batch, epochs, validation split; the best epoch by the
  // link's validation loss is kept for both). The link must outlive no one: the predictor keeps
  // only its own parameters and reads the link's hidden layer when predicting.
  static Result<std::unique_ptr<LossPredictor>> TrainJointly(Link* link, const Column& source, const Column& target,
                                                             const TrainOptions& train,
                                                             const LossPredictionOptions& options = {});
  ~LossPredictor();

  // Predicted loss of `link` on each row of `source` (higher = the link is likely wrong there).
  Result<std::vector<float>> Predict(const Link& link, const Column& source) const;
  // The link's actual loss on each row (for checking the predictor).
  static Result<std::vector<float>> RowLosses(const Link& link, const Column& source, const Column& target);

  struct Impl;

 private:
  explicit LossPredictor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlink::link
