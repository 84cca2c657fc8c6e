// Many links at once. Links are tiny, so per-call framework overhead dominates their cost; these
// run every link of a group as one stacked computation (batched matmuls over stacked weights,
// padding to the group's largest dims, masks keep each link exactly its own size).
//
// Training many links this way is mathematically the same as training each alone with the same
// mini-batch order: the loss is a sum of per-link losses and RMSprop is element-wise.
#pragma once

#include <memory>
#include <vector>

#include "mlink/link/link.h"

namespace mlink::link {

struct PairwiseResult {
  int source = 0;
  int target = 0;
  std::unique_ptr<Link> link;
  TrainReport report;
};

// Trains the links (source -> target) for every listed pair of models, grouped by architecture.
// Without dropout a group runs on a torch-free trainer (hand-written backward passes, BLAS matrix
// products, torch's RMSprop; repeated token sequences encoded once per batch); with dropout, as
// one stacked LibTorch computation. Either way every link ends where training it alone with
// Link::Train ends, up to float rounding. `outputs[m]` is model m's column (all aligned, same
// rows); `specs[m]` its format and task. Pairs empty = all k(k-1) ordered pairs.
struct PairwiseOptions {
  TrainOptions train;
  int hidden = 0;          // 0 = 2 x target length
  double dropout = 0.0;
  int embed_dim = 32;
  int lstm_hidden = 64;
  std::vector<std::pair<int, int>> pairs;
  // Threads for training (0 = one per hardware thread): the links of a group are split across
  // them every epoch. The results do not depend on it; with dropout (LibTorch path) training
  // runs on one thread, the masks coming from torch's one global generator.
  int threads = 1;
  // Progress: called after every epoch of each group (architecture name, links in it), on the
  // calling thread.
  std::function<void(const std::string& arch, int links, int epoch, int epochs, double train_loss)> progress;
};

struct ModelOutputSpec {
  OutputFormat format;
  TaskKind task = TaskKind::kSingleLabel;
};

Result<std::vector<PairwiseResult>> TrainPairwise(const std::vector<ModelOutputSpec>& models,
                                                   const std::vector<Column>& outputs,
                                                   const PairwiseOptions& options);

struct BatchedPredictorOptions {
  // Threads for the vec2vec links (0 = one per hardware thread). The other architectures run
  // on LibTorch's intra-op threads (SetTorchThreads).
  int threads = 0;
};

// Runs many links (any architecture; grouped internally) on their inputs. inputs[l] feeds
// links[l]; outputs as Link::Predict (up to float rounding). vec2vec links run on a torch-free
// path (plain float weights, rows in cache-sized blocks, several threads); the other
// architectures as one stacked LibTorch pass per group. Create copies the links' parameters:
// later changes to the links are not seen. Predict is const and may run concurrently.
class BatchedPredictor {
 public:
  static Result<std::unique_ptr<BatchedPredictor>> Create(const std::vector<const Link*>& links,
                                                          const BatchedPredictorOptions& options = {});
  ~BatchedPredictor();
  Result<std::vector<Column>> Predict(const std::vector<const Column*>& inputs) const;

  struct Impl;

 private:
  explicit BatchedPredictor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlink::link
