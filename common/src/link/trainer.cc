#include "link/trainer.h"

#include <algorithm>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>

#include "link/fast_train.h"

namespace mlink::link::internal {

namespace {
constexpr int64_t kChunkRows = 8192;
}  // namespace

std::mutex& InitMutex() {
  static std::mutex mu;
  return mu;
}

torch::Tensor PredictStacked(StackedLink& model, const SourceBatch& x, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t n = x.vec.defined() ? x.vec.size(1) : x.tokens.size(1);
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < n; start += kChunkRows) {
    SourceBatch xb = x.Slice(start, std::min(kChunkRows, n - start)).To(device);
    if (model->seq_target()) {
      parts.push_back(model->Greedy(xb).cpu());
    } else {
      parts.push_back(model->Activate(model->Forward(xb, nullptr)).cpu());
    }
  }
  if (parts.empty()) {
    const int64_t L = model->num_links();
    return model->seq_target() ? torch::zeros({L, 0, model->out_len()}, torch::kLong)
                               : torch::zeros({L, 0, model->out_len()});
  }
  return parts.size() == 1 ? parts[0] : torch::cat(parts, 1);
}

Column UnpackPrediction(const StackedLink& model, const torch::Tensor& out, int64_t l) {
  const LinkSpec& s = model->specs()[l];
  if (!model->seq_target()) return UnpackVector(out, l, s.target.dim);
  Column c = UnpackTokens(out, l);
  for (auto& seq : c.seqs) {
    if (static_cast<int>(seq.size()) > s.target.max_len) seq.resize(s.target.max_len);
  }
  return c;
}

Result<double> TorchLossAndGrad(const LinkSpec& spec, const FlatParams& params, const Column& x, const Column& y,
                                const std::vector<std::size_t>& rows, std::vector<float>* grad) {
  Column xs = x.Select(rows), ys = y.Select(rows);
  MLINK_ASSIGN_OR_RETURN(auto xb, PackSources({spec}, {&xs}, spec.source.dim, spec.source.max_len + 1));
  MLINK_ASSIGN_OR_RETURN(auto yb, PackTargets({spec}, {&ys}, spec.target.dim, spec.target.max_len + 1));
  try {
    StackedLink model(std::vector<LinkSpec>{spec});
    MLINK_RETURN_IF_ERROR(model->ImportLink(0, params));
    model->train();
    for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
    auto loss = model->Loss(model->Forward(xb, &yb), yb).sum();
    loss.backward();
    grad->clear();
    for (const auto& p : model->parameters()) {  // registration order = FlatParams order; L = 1: no padding
      auto g = p.grad().defined() ? p.grad().contiguous() : torch::zeros_like(p);
      grad->insert(grad->end(), g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
    }
    if (grad->size() != params.data.size()) return Status::Internal("gradient size differs from the parameters'");
    return loss.item<double>();
  } catch (const std::exception& e) {
    return Status::Internal(std::string("link loss and gradient: ") + e.what());
  }
}

Result<std::vector<TrainReport>> TrainStacked(StackedLink& model, const SourceBatch& x, const TargetBatch& y,
                                              const std::vector<const Column*>& targets,
                                              const TrainOptions& o, const torch::Device& device) {
  if (o.epochs < 1 || o.batch_size < 1 || !(o.learning_rate > 0) || o.validation_share < 0 ||
      o.validation_share >= 1) {
    return Status::InvalidArgument("train options: epochs >= 1, batch_size >= 1, learning_rate > 0 and "
                                   "validation_share in [0, 1) expected");
  }
  const int64_t L = model->num_links();
  const int64_t n = x.vec.defined() ? x.vec.size(1) : x.tokens.size(1);
  if (n < 2) return Status::InvalidArgument("training a link needs at least 2 rows, got " + std::to_string(n));

  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> train_idx, val_idx;
  SplitRows(n, o.validation_share, rng, &train_idx, &val_idx);
  const int64_t n_val = static_cast<int64_t>(val_idx.size());

  model->to(device);
  SourceBatch xd = x.To(device);
  TargetBatch yd = y.To(device);
  auto val_t = torch::tensor(val_idx, torch::kLong).to(device);
  SourceBatch xv = n_val ? xd.Rows(val_t) : SourceBatch();
  TargetBatch yv = n_val ? yd.Rows(val_t) : TargetBatch();

  torch::optim::RMSprop opt(model->parameters(), torch::optim::RMSpropOptions(o.learning_rate));
  auto params = model->parameters();
  std::vector<torch::Tensor> best;
  for (auto& p : params) best.push_back(p.detach().clone());
  auto best_val = torch::full({L}, std::numeric_limits<float>::infinity());
  auto bad = torch::zeros({L}, torch::kLong);

  std::vector<TrainReport> reports(static_cast<std::size_t>(L));
  torch::Tensor last_train = torch::zeros({L});
  int epoch = 0;
  for (; epoch < o.epochs; ++epoch) {
    model->train();
    std::shuffle(train_idx.begin(), train_idx.end(), rng);
    auto all = torch::tensor(train_idx, torch::kLong).to(device);
    torch::Tensor sum = torch::zeros({L}, torch::TensorOptions().device(device));
    const int64_t nt = static_cast<int64_t>(train_idx.size());
    for (int64_t start = 0; start < nt; start += o.batch_size) {
      auto idx = all.narrow(0, start, std::min<int64_t>(o.batch_size, nt - start));
      SourceBatch xb = xd.Rows(idx);
      TargetBatch yb = yd.Rows(idx);
      opt.zero_grad();
      auto logits = model->Forward(xb, &yb);
      auto loss = model->Loss(logits, yb);
      loss.sum().backward();
      opt.step();
      sum += loss.detach() * static_cast<double>(idx.size(0));
    }
    last_train = (sum / static_cast<double>(nt)).cpu();
    if (o.on_epoch) o.on_epoch(epoch + 1, o.epochs, last_train.mean().item<double>());
    if (n_val == 0) continue;

    torch::Tensor val_loss;
    {
      torch::NoGradGuard no_grad;
      model->eval();
      val_loss = model->Loss(model->Forward(xv, &yv), yv).cpu();
    }
    auto improved = val_loss < best_val;
    best_val = torch::where(improved, val_loss, best_val);
    bad = torch::where(improved, torch::zeros_like(bad), bad + 1);
    if (o.restore_best && improved.any().item<bool>()) {
      torch::NoGradGuard no_grad;
      auto imp = improved.to(device);
      for (std::size_t i = 0; i < params.size(); ++i) {
        std::vector<int64_t> view(static_cast<std::size_t>(params[i].dim()), 1);
        view[0] = L;
        best[i] = torch::where(imp.view(view), params[i].detach(), best[i]);
      }
    }
    if ((bad >= o.patience).all().item<bool>()) {
      ++epoch;
      break;
    }
  }
  if (n_val > 0 && o.restore_best) {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i) params[i].copy_(best[i]);
  }

  // Validation metric of every link on its own format.
  torch::Tensor pred = n_val ? PredictStacked(model, xv, device) : torch::Tensor();
  std::vector<std::size_t> val_rows(val_idx.begin(), val_idx.end());
  for (int64_t l = 0; l < L; ++l) {
    TrainReport& r = reports[l];
    r.epochs_run = epoch;
    r.train_loss = last_train[l].item<double>();
    r.train_rows = train_idx.size();
    r.validation_rows = static_cast<std::size_t>(n_val);
    if (n_val > 0) {
      r.validation_loss = best_val[l].item<double>();
      Column p = UnpackPrediction(model, pred, l);
      Column ref = targets[l]->Select(val_rows);
      r.validation = Evaluate(model->specs()[l].task, p, ref);
    } else {
      r.validation_loss = r.train_loss;
    }
  }
  model->eval();
  return reports;
}

}  // namespace mlink::link::internal
