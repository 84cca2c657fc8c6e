// A recorded trace: every model's output on every frame of a source, with measured latency, in
// one SQLite file. `mlink-edge record` writes it; experiments, tests and the trace-replay model
// adapter read it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mlink/common/sqlite.h"
#include "mlink/edge/model.h"
#include "mlink/link/data.h"

namespace mlink::edge {

class Trace {
 public:
  // Creates (or opens, to append) a trace file.
  static Result<std::unique_ptr<Trace>> Create(const std::string& path, const std::string& source);
  // Opens an existing trace read-only; a missing or corrupt file is a clear error.
  static Result<std::unique_ptr<Trace>> Open(const std::string& path);

  // Registers the models (their order is the column order); must match on append.
  Status SetModels(const std::vector<ModelInfo>& models);
  const std::vector<ModelInfo>& models() const { return models_; }
  int ModelIndex(const std::string& name) const;  // -1 if absent

  // One frame: outputs[i] and latency_ms[i] of model i; ok[i] false if the model failed then.
  Status AddFrame(int64_t frame, double timestamp_s, const std::vector<ModelOutput>& outputs,
                  const std::vector<double>& latency_ms, const std::vector<bool>& ok);
  // Batches frames into one transaction (much faster); Commit() ends it.
  Status Begin();
  Status Commit();

  int64_t FrameCount() const;
  std::string source() const { return source_; }
  // Frame numbers in order, and every model's outputs as columns aligned with them (frames where
  // any model failed are left out).
  struct Table {
    std::vector<int64_t> frames;
    std::vector<link::Column> outputs;  // one per model
    std::vector<double> mean_latency_ms;  // one per model
  };
  Result<Table> Load() const;
  // One model's output on one frame (trace replay).
  Result<ModelOutput> Output(const std::string& model, int64_t frame) const;

 private:
  explicit Trace(std::unique_ptr<sql::Database> db) : db_(std::move(db)) {}
  Status LoadModels();
  std::unique_ptr<sql::Database> db_;
  std::vector<ModelInfo> models_;
  std::string source_;
};

}  // namespace mlink::edge
