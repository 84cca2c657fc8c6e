#include "mlink/link/batched.h"

#include <algorithm>
#include <map>
#include <thread>

#include "link/dense_mlp.h"
#include "link/fast_train.h"
#include "link/modules.h"
#include "link/trainer.h"

namespace mlink::link {

using internal::StackedLink;

namespace {

struct Dims {
  int64_t din = 0, tin = 0, dout = 0, to = 0;
};

Dims GroupDims(const std::vector<LinkSpec>& specs) {
  Dims d;
  for (const auto& s : specs) {
    d.din = std::max<int64_t>(d.din, s.source.dim);
    d.tin = std::max<int64_t>(d.tin, s.source.max_len + 1);
    d.dout = std::max<int64_t>(d.dout, s.target.dim);
    d.to = std::max<int64_t>(d.to, s.target.max_len + 1);
  }
  return d;
}

}  // namespace

Result<std::vector<PairwiseResult>> TrainPairwise(const std::vector<ModelOutputSpec>& models,
                                                  const std::vector<Column>& outputs,
                                                  const PairwiseOptions& options) {
  const int k = static_cast<int>(models.size());
  if (outputs.size() != models.size()) return Status::InvalidArgument("pairwise training: one output column per model expected");
  std::vector<std::pair<int, int>> pairs = options.pairs;
  if (pairs.empty()) {
    for (int i = 0; i < k; ++i) {
      for (int j = 0; j < k; ++j) {
        if (i != j) pairs.emplace_back(i, j);
      }
    }
  }
  // Group the links by architecture; each group trains as one stacked computation.
  std::map<int, std::vector<std::size_t>> groups;
  std::vector<LinkSpec> specs;
  for (std::size_t p = 0; p < pairs.size(); ++p) {
    auto [i, j] = pairs[p];
    if (i < 0 || j < 0 || i >= k || j >= k || i == j) return Status::InvalidArgument("pairwise training: bad pair (" + std::to_string(i) + ", " + std::to_string(j) + ")");
    LinkSpec s;
    s.source = models[i].format;
    s.target = models[j].format;
    s.task = models[j].task;
    s.hidden = options.hidden;
    s.dropout = options.dropout;
    s.embed_dim = options.embed_dim;
    s.lstm_hidden = options.lstm_hidden;
    Status st = s.Validate();
    if (!st.ok()) return st.WithContext("link " + std::to_string(i) + " -> " + std::to_string(j));
    specs.push_back(s);
    groups[static_cast<int>(internal::ArchOf(s))].push_back(p);
  }
  std::vector<PairwiseResult> results(pairs.size());
  const int threads =
      options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::Device device(torch::kCPU);
  // Without dropout a group trains on the torch-free trainer (the same computation without
  // LibTorch's per-op overhead), from the same initial parameters.
  auto train_group_fast = [&](const std::vector<LinkSpec>& gs, const std::vector<const Column*>& xs,
                            const std::vector<const Column*>& ys, const std::vector<std::size_t>& members,
                            const TrainOptions& train) -> Status {
    std::vector<FlatParams> init;
    try {
      StackedLink start(gs, std::vector<uint64_t>(gs.size(), options.train.seed));
      for (std::size_t m = 0; m < gs.size(); ++m) init.push_back(start->ExportLink(static_cast<int64_t>(m)));
    } catch (const std::exception& e) {
      return Status::Internal(std::string("creating stacked links: ") + e.what());
    }
    MLINK_ASSIGN_OR_RETURN(auto trained, internal::FastTrain(gs, xs, ys, std::move(init), train, threads));
    for (std::size_t m = 0; m < members.size(); ++m) {
      std::size_t p = members[m];
      MLINK_ASSIGN_OR_RETURN(auto link, Link::Create(gs[m], 1));
      MLINK_RETURN_IF_ERROR(link->SetParams(trained.params[m]));
      TrainReport report = trained.reports[m];
      if (!trained.validation_rows.empty()) {
        // The validation metric as TrainStacked reports it: the link's own predictions.
        MLINK_ASSIGN_OR_RETURN(auto pred, link->Predict(xs[m]->Select(trained.validation_rows)));
        report.validation = Evaluate(gs[m].task, pred, ys[m]->Select(trained.validation_rows));
      }
      results[p].source = pairs[p].first;
      results[p].target = pairs[p].second;
      results[p].link = std::move(link);
      results[p].report = report;
    }
    return Status::Ok();
  };
  auto train_group = [&](const std::vector<std::size_t>& members) -> Status {
    std::vector<LinkSpec> gs;
    std::vector<const Column*> xs, ys;
    for (std::size_t p : members) {
      gs.push_back(specs[p]);
      xs.push_back(&outputs[pairs[p].first]);
      ys.push_back(&outputs[pairs[p].second]);
    }
    TrainOptions train = options.train;
    if (options.progress) {
      std::string arch_name = gs[0].ArchName();
      int count = static_cast<int>(gs.size());
      train.on_epoch = [&options, arch_name, count](int epoch, int epochs, double loss) {
        options.progress(arch_name, count, epoch, epochs, loss);
      };
    }
    if (std::all_of(gs.begin(), gs.end(), internal::FastTrainable)) return train_group_fast(gs, xs, ys, members, train);
    Dims d = GroupDims(gs);
    MLINK_ASSIGN_OR_RETURN(auto x, internal::PackSources(gs, xs, d.din, d.tin));
    MLINK_ASSIGN_OR_RETURN(auto y, internal::PackTargets(gs, ys, d.dout, d.to));
    StackedLink module{nullptr};
    try {
      // Every link starts as Link::Create(spec, seed) would: stacked training then gives what
      // training each link alone gives (same start, same mini-batches).
      module = StackedLink(gs, std::vector<uint64_t>(gs.size(), options.train.seed));
    } catch (const std::exception& e) {
      return Status::Internal(std::string("creating stacked links: ") + e.what());
    }
    std::vector<TrainReport> reports;
    try {
      MLINK_ASSIGN_OR_RETURN(reports, internal::TrainStacked(module, x, y, ys, train, device));
    } catch (const std::exception& e) {
      return Status::Internal(std::string("stacked link training failed: ") + e.what());
    }
    for (std::size_t m = 0; m < members.size(); ++m) {
      std::size_t p = members[m];
      MLINK_ASSIGN_OR_RETURN(auto link, Link::Create(gs[m], 1));
      MLINK_RETURN_IF_ERROR(link->SetParams(module->ExportLink(static_cast<int64_t>(m))));
      results[p].source = pairs[p].first;
      results[p].target = pairs[p].second;
      results[p].link = std::move(link);
      results[p].report = reports[m];
    }
    return Status::Ok();
  };
  // The groups train one after another, the links of a group on `threads` threads (the torch-free
  // trainer; with dropout, one thread: the masks come from torch's one global generator). Each
  // link's result is the same whichever thread trains it.
  for (const auto& [arch, members] : groups) {
    Status st = Status::Ok();
    try {
      st = train_group(members);
    } catch (const std::exception& e) {
      st = Status::Internal(std::string("pairwise training: ") + e.what());
    }
    MLINK_RETURN_IF_ERROR(st);
  }
  return results;
}

struct BatchedPredictor::Impl {
  struct Group {
    std::vector<std::size_t> members;  // indices into the links given to Create
    std::vector<LinkSpec> specs;
    StackedLink module{nullptr};  // undefined for the vec2vec group (dense path)
    std::vector<internal::DenseMlp> dense;
    Dims dims;
  };
  std::vector<Group> groups;
  std::size_t count = 0;
  int threads = 1;
};

BatchedPredictor::BatchedPredictor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BatchedPredictor::~BatchedPredictor() = default;

Result<std::unique_ptr<BatchedPredictor>> BatchedPredictor::Create(const std::vector<const Link*>& links,
                                                                    const BatchedPredictorOptions& options) {
  if (options.threads < 0) return Status::InvalidArgument("batched predictor: threads >= 0 expected");
  auto impl = std::make_unique<Impl>();
  impl->count = links.size();
  impl->threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::map<int, std::size_t> by_arch;
  for (std::size_t i = 0; i < links.size(); ++i) {
    int arch = static_cast<int>(internal::ArchOf(links[i]->spec()));
    auto it = by_arch.find(arch);
    if (it == by_arch.end()) {
      it = by_arch.emplace(arch, impl->groups.size()).first;
      impl->groups.emplace_back();
    }
    auto& g = impl->groups[it->second];
    g.members.push_back(i);
    g.specs.push_back(links[i]->spec());
  }
  try {
    for (auto& g : impl->groups) {
      g.dims = GroupDims(g.specs);
      if (internal::ArchOf(g.specs[0]) == internal::Arch::kVec2Vec) {
        for (std::size_t m = 0; m < g.members.size(); ++m) {
          MLINK_ASSIGN_OR_RETURN(auto dense, internal::DenseMlp::FromParams(g.specs[m], links[g.members[m]]->GetParams()));
          g.dense.push_back(std::move(dense));
        }
        continue;
      }
      g.module = StackedLink(g.specs);
      g.module->eval();
      for (std::size_t m = 0; m < g.members.size(); ++m) {
        MLINK_RETURN_IF_ERROR(g.module->ImportLink(static_cast<int64_t>(m), links[g.members[m]]->GetParams()));
      }
    }
  } catch (const std::exception& e) {
    return Status::Internal(std::string("building batched predictor: ") + e.what());
  }
  return std::unique_ptr<BatchedPredictor>(new BatchedPredictor(std::move(impl)));
}

Result<std::vector<Column>> BatchedPredictor::Predict(const std::vector<const Column*>& inputs) const {
  if (inputs.size() != impl_->count) return Status::InvalidArgument("batched prediction: one input per link expected");
  std::vector<Column> out(inputs.size());
  try {
    for (auto& g : impl_->groups) {
      std::vector<const Column*> xs;
      for (std::size_t i : g.members) xs.push_back(inputs[i]);
      if (!g.dense.empty()) {
        std::vector<const internal::DenseMlp*> ms;
        std::vector<Column*> ys;
        for (std::size_t m = 0; m < g.members.size(); ++m) {
          MLINK_RETURN_IF_ERROR(xs[m]->Check(g.specs[m].source, "link source"));
          if (xs[m]->rows() != xs[0]->rows()) return Status::InvalidArgument("input columns differ in row count");
          ms.push_back(&g.dense[m]);
          ys.push_back(&out[g.members[m]]);
        }
        MLINK_RETURN_IF_ERROR(internal::RunDenseMlps(ms, xs, ys, impl_->threads));
        continue;
      }
      MLINK_ASSIGN_OR_RETURN(auto x, internal::PackSources(g.specs, xs, g.dims.din, g.dims.tin, /*borrow=*/true));
      const int64_t n = static_cast<int64_t>(xs[0]->rows());
      if (g.module->seq_target()) {
        auto pred = internal::PredictStacked(g.module, x, torch::Device(torch::kCPU));
        for (std::size_t m = 0; m < g.members.size(); ++m) {
          out[g.members[m]] = internal::UnpackPrediction(g.module, pred, static_cast<int64_t>(m));
        }
        continue;
      }
      // Vector targets: chunk by chunk, each link's rows appended straight to its column.
      for (std::size_t m = 0; m < g.members.size(); ++m) {
        Column& c = out[g.members[m]];
        c = Column::Vectors(g.specs[m].target.dim, {});
        c.values.reserve(static_cast<std::size_t>(n) * g.specs[m].target.dim);
      }
      torch::NoGradGuard no_grad;
      g.module->eval();
      // Small chunks keep the [L, rows, hidden] intermediates in cache (memory-bound otherwise).
      const int64_t kChunk = std::max<int64_t>(64, (1 << 21) / std::max<int64_t>(1, static_cast<int64_t>(g.members.size()) * 64));
      for (int64_t start = 0; start < n; start += kChunk) {
        auto act = g.module->Activate(g.module->Forward(x.Slice(start, std::min(kChunk, n - start)), nullptr)).contiguous();
        const int64_t rows = act.size(1), dpad = act.size(2);
        const float* p = act.data_ptr<float>();
        for (std::size_t m = 0; m < g.members.size(); ++m) {
          Column& c = out[g.members[m]];
          const int d = g.specs[m].target.dim;
          const float* base = p + static_cast<int64_t>(m) * rows * dpad;
          if (d == dpad) {
            c.values.insert(c.values.end(), base, base + rows * dpad);
          } else {
            for (int64_t r = 0; r < rows; ++r) c.values.insert(c.values.end(), base + r * dpad, base + r * dpad + d);
          }
        }
      }
    }
  } catch (const std::exception& e) {
    return Status::Internal(std::string("batched prediction failed: ") + e.what());
  }
  return out;
}

}  // namespace mlink::link
