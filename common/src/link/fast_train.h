// Internal: a torch-free trainer for links. Links are tiny, so in LibTorch each step's cost is
// per-op dispatch and autograd bookkeeping, not arithmetic; this trainer runs the same networks
// with hand-written backward passes over plain float arrays (SmallGemm for the matrix products) and
// RMSprop with torch's semantics, so it ends where TrainStacked ends up to float rounding.
//
// Differences in how the work is done, none in what is computed: the LSTM input projection is
// taken from a per-step table (embedding x W + b, one row per token id); the rows of a batch run
// in length order, so padded steps (no effect on h, c, outputs or the loss) are skipped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "mlink/common/flat_params.h"
#include "mlink/common/status.h"
#include "mlink/link/data.h"
#include "mlink/link/link.h"

namespace mlink::link::internal {

// The train/validation split both trainers share (so they see the same rows): shuffles 0..n-1
// with `rng`, the first floor(n * validation_share) rows (at most n - 1) validate, sorted; the
// rest train, in shuffled order. `rng` goes on to draw the batch order.
void SplitRows(int64_t n, double validation_share, std::mt19937_64& rng, std::vector<int64_t>* train_idx,
               std::vector<int64_t>* val_idx);

// C = beta * C + op(A) op(B), row-major, A M x K (K x M with ta), B K x N (N x K with tb): the
// trainer's matrix product. Products of up to 16M multiply-adds run on a register-blocked
// kernel reading the operands in place where the CPU has AVX2 and FMA; others on BLAS.
void SmallGemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float beta,
               float* c, int ldc);

// True when FastTrain covers the spec: every architecture, without dropout (dropout masks come
// from torch's generator and cannot be reproduced here).
bool FastTrainable(const LinkSpec& spec);

struct FastTrainResult {
  std::vector<FlatParams> params;     // per link: the trained (best-restored) parameters
  std::vector<TrainReport> reports;   // per link; `validation` (the metric) is left to the caller
  std::vector<std::size_t> validation_rows;  // the held-out rows, ascending
};

// Trains link l on x[l] -> y[l] from init[l] (Link::GetParams layout) exactly as TrainStacked
// trains a group holding these links: same split, same shuffled mini-batches shared by all
// links, RMSprop, validation every epoch, best parameters restored, and the group stops when
// every link has gone `patience` epochs without improving. on_epoch gets the group's mean
// training loss (on the calling thread). Every spec must be FastTrainable. The links are split
// across `threads` threads each epoch; the result does not depend on how many. Calls on
// different data may run concurrently.
Result<FastTrainResult> FastTrain(const std::vector<LinkSpec>& specs, const std::vector<const Column*>& x,
                                  const std::vector<const Column*>& y, std::vector<FlatParams> init,
                                  const TrainOptions& options, int threads = 1);

// One link's mean training loss over `rows` of (x, y) with parameters `params`, and its gradient
// in the layout of params.data.
Result<double> FastLossAndGrad(const LinkSpec& spec, const FlatParams& params, const Column& x, const Column& y,
                               const std::vector<std::size_t>& rows, std::vector<float>* grad);
// The same computed by the LibTorch module (trainer.cc): the reference the trainer is checked
// against.
Result<double> TorchLossAndGrad(const LinkSpec& spec, const FlatParams& params, const Column& x, const Column& y,
                                const std::vector<std::size_t>& rows, std::vector<float>* grad);

}  // namespace mlink::link::internal
