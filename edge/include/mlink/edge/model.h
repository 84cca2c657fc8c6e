// Black-box models on an edge: one interface for every adapter (OpenCV built-ins, cv::dnn files,
// TorchScript files, a remote KServe v2 model, a recorded trace). A model maps a frame to a
// fixed-length vector or a token sequence, with its task kind and cost.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mlink/common/status.h"
#include "mlink/link/spec.h"

namespace mlink::edge {

struct Frame {
  cv::Mat image;          // BGR, 8-bit (as OpenCV decodes video); may be empty for trace replay
  int64_t index = 0;      // frame number in its source
  double timestamp_s = 0; // seconds since the source started
};

// One model's output on one frame.
struct ModelOutput {
  std::vector<float> vec;        // vector outputs
  std::vector<int32_t> tokens;   // sequence outputs (content ids >= 3)
};

struct ModelInfo {
  std::string name;
  std::string kind;                   // adapter kind, e.g. "hog", "kserve"
  link::OutputFormat format;
  link::TaskKind task = link::TaskKind::kCount;
  double declared_cost = 0;           // optional cost from config (ms, or MiB of GPU memory); 0 = measure
};

// Thread-compatible: one thread runs a given Model at a time.
class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelInfo& info() const = 0;
  // Runs the model on one frame. A failure or timeout is a Status naming the model and what
  // happened; the caller reports it and skips the model for that frame (never a crash).
  virtual Result<ModelOutput> Run(const Frame& frame) = 0;
};

}  // namespace mlink::edge
