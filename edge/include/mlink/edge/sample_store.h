// The sample store of one site (SQLite, data_dir/samples.db): what link training learns from.
//
//   frames   every served frame's outputs of the models that ran on it (outputs are kept per model
//            name, so adding a model to the config later keeps the old rows usable);
//   sampled  frames on which every model ran (profiling and active sampling): link training rows;
//   labels   ground truth for oracle links, matched to a frame by number or timestamp.
//
// Bounded, with this eviction policy: at most `max_sampled` sampled frames (the oldest go first,
// so training data tracks the current scene); at most `recent_frames` other frames (kept only
// so that labels arriving later can find the deployed model's output; oldest first, a frame with a
// label is kept); at most `max_labels` labels (oldest first). Everything survives restarts.
//
// Thread-safety: one thread at a time (the site's learner thread owns it).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mlink/common/sqlite.h"
#include "mlink/edge/model.h"
#include "mlink/link/data.h"

namespace mlink::edge {

struct SampleStoreOptions {
  int64_t max_sampled = 5000;
  int64_t recent_frames = 20000;
  int64_t max_labels = 20000;
};

// A label for the oracle node: the true output on one frame (a one-hot or value vector).
struct Label {
  int64_t frame = -1;        // frame number, or -1 to match by timestamp
  double timestamp_s = -1;   // used when frame is -1 (the nearest stored frame within tolerance)
  std::vector<float> value;
};

class SampleStore {
 public:
  // Opens or creates the store; a corrupt file is a clear kDataLoss error (never silently reset).
  static Result<std::unique_ptr<SampleStore>> Open(const std::string& path, const SampleStoreOptions& options = {});

  // Records one frame: outputs[i] of models[i] where ran[i]; `sampled` when it is a training row.
  Status Add(const std::vector<ModelInfo>& models, int64_t frame, double timestamp_s,
             const std::vector<ModelOutput>& outputs, const std::vector<bool>& ran, bool sampled);

  // Stores labels of `dim` values each. A label whose frame is not (or no longer) stored, or
  // whose timestamp is farther than `tolerance_s` from every stored frame, is not stored; the
  // result says how many were stored and lists why the others were not.
  struct LabelResult {
    int64_t stored = 0;
    std::vector<std::string> rejected;  // "line N: why" or "frame F: why"
  };
  Result<LabelResult> AddLabels(const std::vector<Label>& labels, int dim, double tolerance_s = 0.05);

  // The newest `limit` sampled frames (0 = all), oldest first: aligned columns of `models`.
  struct Rows {
    std::vector<int64_t> frames;
    std::vector<link::Column> outputs;  // one per model
  };
  Result<Rows> Sampled(const std::vector<ModelInfo>& models, int64_t limit = 0) const;
  // Frames with a label on which `model` ran: its outputs and the labels (dim `label_dim`).
  struct Labelled {
    std::vector<int64_t> frames;
    link::Column source;
    link::Column labels;
  };
  Result<Labelled> LabelledRows(const ModelInfo& model, int label_dim) const;

  int64_t SampledCount() const;
  int64_t FrameCount() const;
  int64_t LabelCount() const;
  int64_t NewestFrame() const;  // -1 when empty
  const std::string& path() const { return db_->path(); }

 private:
  SampleStore() = default;
  Status Evict();
  std::unique_ptr<sql::Database> db_;
  std::unique_ptr<sql::Statement> add_frame_, add_output_;  // prepared once: Add runs every frame
  SampleStoreOptions options_;
  int64_t adds_since_evict_ = 0;
};

// Parses labels from CSV ("frame,v1,v2,..." or "t=SECONDS,v1,..."; a header line starting with a
// letter is skipped; a single integer value k with num_classes > 1 means class k, one-hot) or
// JSON lines ({"frame": F | "ts": T, "label": k | [v...]}). Errors name the line.
Result<std::vector<Label>> ParseLabels(const std::string& text, int dim, bool one_hot_classes);

}  // namespace mlink::edge
