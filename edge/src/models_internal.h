// Internal: shared helpers of the model adapters.
#pragma once

#include <cmath>
#include <vector>

#include "mlink/edge/models.h"

namespace mlink::edge {

Result<std::unique_ptr<Model>> CreateOpenCvModel(const ModelConfig& c);
Result<std::unique_ptr<Model>> CreateTorchScriptModel(const ModelConfig& c);
Result<std::unique_ptr<Model>> CreateTraceModel(const ModelConfig& c);

// ModelInfo of a vector-output model from output_dim and task.
Result<ModelInfo> VectorInfo(const ModelConfig& c);

// Single-label outputs are turned into a probability distribution if they are not one already
// (networks often end in logits); other tasks pass through.
inline ModelOutput NormaliseForTask(link::TaskKind task, std::vector<float> v) {
  if (task == link::TaskKind::kSingleLabel && !v.empty()) {
    double sum = 0;
    bool probs = true;
    for (float x : v) {
      probs = probs && x >= 0;
      sum += x;
    }
    if (!probs || std::fabs(sum - 1.0) > 1e-3) {
      float mx = v[0];
      for (float x : v) mx = std::max(mx, x);
      double z = 0;
      for (float& x : v) z += (x = std::exp(x - mx));
      for (float& x : v) x = static_cast<float>(x / z);
    }
  }
  return ModelOutput{std::move(v), {}};
}

}  // namespace mlink::edge
