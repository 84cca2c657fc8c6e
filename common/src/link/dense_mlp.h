// Internal: a torch-free inference path for vec2vec links. A vec2vec link is the MLP
// x -> relu(x W1 + b1) W2 + b2 followed by its task's activation. Run through a framework, many
// such tiny links over many rows cost per-call overhead and [links, rows, hidden] intermediates
// that spill out of cache; here each block of rows goes through one link at a time while the
// block's activations stay in L1/L2, and the activated outputs are written straight into the
// result columns. Same numbers as Link::Predict up to float rounding.
#pragma once

#include <vector>

#include "mlink/common/flat_params.h"
#include "mlink/common/status.h"
#include "mlink/link/data.h"
#include "mlink/link/spec.h"

namespace mlink::link::internal {

// One vec2vec link's weights as plain arrays (row-major, the link's own unpadded sizes).
struct DenseMlp {
  int din = 0, hidden = 0, dout = 0;
  TaskKind task = TaskKind::kSingleLabel;
  std::vector<float> w1;  // [din, hidden]
  std::vector<float> b1;  // [hidden]
  std::vector<float> w2;  // [hidden, dout]
  std::vector<float> b2;  // [dout]

  // From a vec2vec link's parameters (Link::GetParams(): mlp_w1, mlp_b1, mlp_w2, mlp_b2).
  static Result<DenseMlp> FromParams(const LinkSpec& spec, const FlatParams& params);
};

// Runs links[l] on *inputs[l] and replaces *outputs[l] with its activated outputs (vectors of
// length dout). The inputs must already be checked against the links' source formats. Uses up
// to `threads` threads (at least one; the calling thread is one of them). Thread-safe for
// distinct outputs; the links are only read.
Status RunDenseMlps(const std::vector<const DenseMlp*>& links, const std::vector<const Column*>& inputs,
                    const std::vector<Column*>& outputs, int threads);

}  // namespace mlink::link::internal
