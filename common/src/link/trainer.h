// Internal: the training loop shared by single links (L = 1) and stacked groups.
#pragma once

#include <vector>

#include "link/modules.h"
#include "mlink/link/link.h"

namespace mlink::link::internal {

// Serialises seeding + parameter initialisation (torch's global RNG) across threads.
std::mutex& InitMutex();

// Trains every link of `model` on packed rows x -> y (RMSprop, shuffled mini-batches shared by
// all links, per-link early stopping on a validation split, best parameters restored).
// `targets[l]` is link l's target column, used to compute its validation metric.
Result<std::vector<TrainReport>> TrainStacked(StackedLink& model, const SourceBatch& x, const TargetBatch& y,
                                              const std::vector<const Column*>& targets,
                                              const TrainOptions& options, const torch::Device& device);

// Activated outputs for all rows, in chunks: vector targets [L, n, Dout], sequences [L, n, To].
torch::Tensor PredictStacked(StackedLink& model, const SourceBatch& x, const torch::Device& device);

// Link l's rows of a PredictStacked result as a column of its own format.
Column UnpackPrediction(const StackedLink& model, const torch::Tensor& out, int64_t l);

}  // namespace mlink::link::internal
