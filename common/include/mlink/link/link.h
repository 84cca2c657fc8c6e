// Model links and multi-source ensembles.
//
// A Link is g_ij: a tiny network from one model's outputs to another's, with the architecture
// implied by its spec (vec2vec, seq2vec, vec2seq, seq2seq). An Ensemble is h_{A,j}: the links
// from every source in A into one target j, whose pre-activation outputs are combined with
// trainable positive per-source weights (normalised over whichever sources are present, so one
// ensemble serves any non-empty subset A' of its sources), then activated for the target's
// task. The same Ensemble fuses a local and a global link (two sources with the same input).
//
// Thread-safety: Predict/Evaluate are const and may run concurrently with each other; Train,
// SetParams and Load mutate and need exclusive access. Serving code swaps whole Link objects
// (shared_ptr) rather than training the instance it serves from.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mlink/common/flat_params.h"
#include "mlink/common/status.h"
#include "mlink/link/data.h"
#include "mlink/link/device.h"
#include "mlink/link/metrics.h"
#include "mlink/link/spec.h"

namespace mlink::link {

// The paper's settings are the defaults (Section 6.3: RMSprop, lr 0.01, batch 32, 100 epochs).
struct TrainOptions {
  int epochs = 100;
  int batch_size = 32;
  double learning_rate = 0.01;
  double validation_share = 0.2;  // held out for early stopping and the reported performance
  int patience = 10;              // epochs without validation improvement before stopping
  uint64_t seed = 1;              // shuffling, split and initialisation
  bool restore_best = true;       // keep the parameters of the best validation epoch
  // Called after every epoch with the mean training loss over the links being trained (for
  // progress reporting; runs on the training thread, keep it cheap).
  std::function<void(int epoch, int epochs, double train_loss)> on_epoch;
};

struct TrainReport {
  int epochs_run = 0;
  double train_loss = 0;       // last epoch's mean training loss
  double validation_loss = 0;  // best validation loss (or last training loss if no split)
  Evaluation validation;       // metric and p on the validation split
  std::size_t train_rows = 0;
  std::size_t validation_rows = 0;
};

class Link {
 public:
  // A freshly initialised link; deterministic for a given spec and seed.
  static Result<std::unique_ptr<Link>> Create(const LinkSpec& spec, uint64_t seed = 1,
                                              Device device = Device());
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  const LinkSpec& spec() const;
  std::unique_ptr<Link> Clone() const;

  // Activated outputs: probabilities (single-label), sigmoid scores (multi-label), values
  // (regression, count, box) or greedily decoded token sequences.
  Result<Column> Predict(const Column& source) const;
  // Pre-activation outputs for vector targets (the ensemble combines these).
  Result<Column> Logits(const Column& source) const;

  // Trains on aligned rows (source[i] -> target[i]) from the current parameters.
  Result<TrainReport> Train(const Column& source, const Column& target, const TrainOptions& options);
  Result<Evaluation> Evaluate(const Column& source, const Column& target) const;

  // Parameters as one flat vector (names and shapes included), e.g. for federation.
  FlatParams GetParams() const;
  Status SetParams(const FlatParams& params);
  std::size_t ParamCount() const;

  // Spec + parameters, in a versioned binary format; Load checks the format and spec.
  std::vector<uint8_t> Serialize() const;
  static Result<std::unique_ptr<Link>> Deserialize(const std::vector<uint8_t>& bytes, Device device = Device());
  Status Save(const std::string& path) const;
  static Result<std::unique_ptr<Link>> Load(const std::string& path, Device device = Device());

  struct Impl;
  Impl* impl() const { return impl_.get(); }

 private:
  explicit Link(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Ensemble {
 public:
  // All links must share the target format and task. Takes ownership of the links.
  static Result<std::unique_ptr<Ensemble>> Create(std::vector<std::unique_ptr<Link>> links);
  ~Ensemble();

  std::size_t num_sources() const;
  const Link& link(std::size_t i) const;
  // Normalised weights of the given subset (all sources if empty), in source order.
  std::vector<double> Weights(const std::vector<bool>& present = {}) const;

  // inputs[i] is source i's column; present[i] says whether source i is in A' (empty = all).
  // Absent sources' inputs are ignored and may be empty columns. At least one must be present.
  Result<Column> Predict(const std::vector<Column>& inputs, const std::vector<bool>& present = {}) const;
  Result<Evaluation> Evaluate(const std::vector<Column>& inputs, const Column& target,
                              const std::vector<bool>& present = {}) const;

  // Trains the per-source weights (links frozen) on aligned rows; each step draws a random
  // non-empty subset of sources so that every subset is served well.
  Result<TrainReport> TrainWeights(const std::vector<Column>& inputs, const Column& target,
                                   const TrainOptions& options);

  std::vector<uint8_t> Serialize() const;
  static Result<std::unique_ptr<Ensemble>> Deserialize(const std::vector<uint8_t>& bytes, Device device = Device());
  Status Save(const std::string& path) const;
  static Result<std::unique_ptr<Ensemble>> Load(const std::string& path, Device device = Device());

  struct Impl;

 private:
  explicit Ensemble(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlink::link
