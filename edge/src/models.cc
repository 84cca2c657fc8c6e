#include "mlink/edge/models.h"

#include <filesystem>

#include "mlink/common/config.h"
#include "mlink/edge/kserve_model.h"
#include "mlink/edge/trace.h"
#include "models_internal.h"

namespace mlink::edge {

std::vector<ModelConfig> ModelConfigsFromConfig(config::Section& root) {
  std::vector<ModelConfig> out;
  for (config::Section s : root.List("models", true)) {
    ModelConfig c;
    s.Required("name", &c.name);
    if (s.Has("name") && c.name.empty()) s.Error("name", "must not be empty");
    s.Required("kind", &c.kind, {"hog", "cascade", "mog2", "dnn", "torchscript", "kserve", "trace"});
    s.Optional("output", &c.output, {"count", "box"});
    s.Optional("scale", &c.scale, 0.05, 4.0);
    s.Optional("cascade", &c.cascade);
    s.Optional("min_neighbors", &c.min_neighbors, 0.0, 100.0);
    s.Optional("cost_ms", &c.declared_cost, 0.0, 1e9);
    s.OptionalPath("file", &c.file);
    s.OptionalPath("config_file", &c.config_file);
    s.Optional("input_width", &c.input_width, 1, 8192);
    s.Optional("input_height", &c.input_height, 1, 8192);
    s.Optional("grayscale", &c.grayscale);
    s.Optional("input_scale", &c.input_scale, 0.0, 1e6);
    s.Optional("output_dim", &c.output_dim, 1, 1 << 20);
    s.Optional("task", &c.task, {"single_label", "multi_label", "regression", "count", "box"});
    s.Optional("url", &c.url);
    s.Optional("remote_model", &c.remote_model);
    s.Optional("input_name", &c.input_name);
    s.Optional("output_name", &c.output_name);
    s.Optional("timeout_s", &c.timeout_s, 0.01, 600.0);
    s.OptionalPath("trace", &c.trace);
    s.Optional("trace_model", &c.trace_model);
    for (const auto& prev : out) {
      if (prev.name == c.name) s.Error("name", "duplicate model name '" + c.name + "'");
    }
    out.push_back(c);
  }
  return out;
}

Result<ModelInfo> VectorInfo(const ModelConfig& c) {
  if (c.output_dim <= 0) return Status::InvalidArgument("model '" + c.name + "': output_dim must be > 0");
  ModelInfo info;
  info.name = c.name;
  info.kind = c.kind;
  info.format = link::OutputFormat::Vector(c.output_dim);
  MLINK_ASSIGN_OR_RETURN(info.task, link::ParseTaskKind(c.task));
  if (info.task == link::TaskKind::kSequence) return Status::InvalidArgument("model '" + c.name + "': sequence outputs are not supported by this adapter");
  info.declared_cost = c.declared_cost;
  return info;
}

namespace {

// Replays a recorded trace: the output recorded for the frame's index.
class TraceModel : public Model {
 public:
  TraceModel(std::shared_ptr<Trace> trace, std::string model, ModelInfo info)
      : trace_(std::move(trace)), model_(std::move(model)), info_(std::move(info)) {}
  const ModelInfo& info() const override { return info_; }
  Result<ModelOutput> Run(const Frame& f) override { return trace_->Output(model_, f.index); }

 private:
  std::shared_ptr<Trace> trace_;
  std::string model_;
  ModelInfo info_;
};

}  // namespace

Result<std::unique_ptr<Model>> CreateTraceModel(const ModelConfig& c) {
  if (c.trace.empty()) return Status::InvalidArgument("model '" + c.name + "': kind trace needs a 'trace' file");
  if (!std::filesystem::exists(c.trace)) return Status::NotFound("model '" + c.name + "': trace file '" + c.trace + "' not found");
  auto trace = Trace::Open(c.trace);
  if (!trace.ok()) return trace.status().WithContext("model '" + c.name + "'");
  std::string inner = c.trace_model.empty() ? c.name : c.trace_model;
  int idx = (*trace)->ModelIndex(inner);
  if (idx < 0) return Status::NotFound("model '" + c.name + "': trace " + c.trace + " has no model '" + inner + "'");
  ModelInfo info = (*trace)->models()[idx];
  info.name = c.name;
  info.kind = "trace";
  std::shared_ptr<Trace> shared(std::move(trace).value());
  return std::unique_ptr<Model>(new TraceModel(std::move(shared), inner, std::move(info)));
}

Result<std::unique_ptr<Model>> CreateModel(const ModelConfig& c) {
  if (c.name.empty()) return Status::InvalidArgument("a model needs a name");
  if (c.kind == "hog" || c.kind == "cascade" || c.kind == "mog2" || c.kind == "dnn") return CreateOpenCvModel(c);
  if (c.kind == "torchscript") return CreateTorchScriptModel(c);
  if (c.kind == "trace") return CreateTraceModel(c);
  if (c.kind == "kserve") {
    KServeOptions o;
    o.name = c.name;
    o.url = c.url;
    o.model = c.remote_model.empty() ? c.name : c.remote_model;
    o.input_name = c.input_name;
    o.output_name = c.output_name;
    o.width = c.input_width;
    o.height = c.input_height;
    o.grayscale = c.grayscale;
    o.scale = c.input_scale;
    o.output_dim = c.output_dim;
    auto task = link::ParseTaskKind(c.task);
    if (!task.ok()) return task.status().WithContext("model '" + c.name + "'");
    o.task = *task;
    o.timeout_s = c.timeout_s;
    o.declared_cost = c.declared_cost;
    return CreateKServeModel(o);
  }
  return Status::InvalidArgument("model '" + c.name + "': unknown kind '" + c.kind +
                                 "'; expected hog, cascade, mog2, dnn, torchscript, kserve or trace");
}

}  // namespace mlink::edge
