#include "mlink/link/loss_prediction.h"

#include <algorithm>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>

#include "link/link_impl.h"
#include "link/modules.h"
#include "link/trainer.h"

namespace mlink::link {

struct LossPredictor::Impl {
  torch::nn::Sequential net{nullptr};
  int64_t width = 0;
};

LossPredictor::LossPredictor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LossPredictor::~LossPredictor() = default;

namespace {

// Margin ranking loss over the pairs (i, i + B/2) of a batch (an odd row is left out).
torch::Tensor RankingLoss(const torch::Tensor& predicted, const torch::Tensor& actual, double margin) {
  const int64_t half = predicted.size(0) / 2;
  if (half == 0) return torch::zeros({}, predicted.options());
  auto pa = predicted.narrow(0, 0, half), pb = predicted.narrow(0, half, half);
  auto la = actual.narrow(0, 0, half), lb = actual.narrow(0, half, half);
  auto sign = torch::sign(la - lb);
  return torch::clamp_min(-sign * (pa - pb) + margin, 0).mean();
}

}  // namespace

Result<std::unique_ptr<LossPredictor>> LossPredictor::TrainJointly(Link* link, const Column& source,
                                                                   const Column& target, const TrainOptions& o,
                                                                   const LossPredictionOptions& lo) {
  if (!link) return Status::InvalidArgument("loss prediction: no link given");
  if (source.rows() != target.rows()) {
    return Status::InvalidArgument("loss prediction: " + std::to_string(source.rows()) + " source rows but " +
                                   std::to_string(target.rows()) + " target rows");
  }
  if (o.epochs < 1 || o.batch_size < 2 || !(o.learning_rate > 0) || o.validation_share < 0 || o.validation_share >= 1) {
    return Status::InvalidArgument("loss prediction: epochs >= 1, batch_size >= 2, learning_rate > 0 and "
                                   "validation_share in [0, 1) expected");
  }
  if (lo.hidden < 1 || lo.margin < 0 || lo.lambda < 0 || lo.detach_share < 0 || lo.detach_share > 1) {
    return Status::InvalidArgument("loss prediction: hidden >= 1, margin >= 0, lambda >= 0, detach_share in [0, 1] expected");
  }
  Link::Impl& li = *link->impl();
  const LinkSpec& spec = li.spec;
  MLINK_ASSIGN_OR_RETURN(auto x, li.Pack(source));
  MLINK_ASSIGN_OR_RETURN(auto y, internal::PackTargets({spec}, {&target}, spec.target.dim, spec.target.max_len + 1));
  const int64_t n = static_cast<int64_t>(source.rows());
  if (n < 4) return Status::InvalidArgument("loss prediction needs at least 4 rows, got " + std::to_string(n));
  try {
    auto impl = std::make_unique<Impl>();
    auto& model = li.module;
    impl->width = model->hidden_width();
    {
      std::lock_guard<std::mutex> lock(internal::InitMutex());
      torch::manual_seed(o.seed ^ 0x9e3779b97f4a7c15ULL);
      impl->net = torch::nn::Sequential(torch::nn::Linear(impl->width, lo.hidden), torch::nn::ReLU(),
                                        torch::nn::Linear(lo.hidden, 1));
    }
    const torch::Device device = li.torch_device();
    impl->net->to(device);
    model->to(device);

    std::mt19937_64 rng(o.seed);
    std::vector<int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    int64_t n_val = static_cast<int64_t>(std::floor(static_cast<double>(n) * o.validation_share));
    if (n - n_val < 2) n_val = 0;
    std::vector<int64_t> val_idx(order.begin(), order.begin() + n_val);
    std::vector<int64_t> train_idx(order.begin() + n_val, order.end());
    internal::SourceBatch xd = x.To(device);
    internal::TargetBatch yd = y.To(device);
    auto val_t = torch::tensor(val_idx, torch::kLong).to(device);
    internal::SourceBatch xv = n_val ? xd.Rows(val_t) : internal::SourceBatch();
    internal::TargetBatch yv = n_val ? yd.Rows(val_t) : internal::TargetBatch();

    std::vector<torch::Tensor> params = model->parameters();
    const std::size_t n_link = params.size();
    for (auto& p : impl->net->parameters()) params.push_back(p);
    torch::optim::RMSprop opt(params, torch::optim::RMSpropOptions(o.learning_rate));
    std::vector<torch::Tensor> best;
    for (auto& p : params) best.push_back(p.detach().clone());
    double best_val = std::numeric_limits<double>::infinity();
    int bad = 0;
    const int detach_from = static_cast<int>(std::ceil(o.epochs * (1.0 - lo.detach_share)));
    torch::manual_seed(o.seed);
    for (int epoch = 0; epoch < o.epochs; ++epoch) {
      model->train();
      impl->net->train();
      std::shuffle(train_idx.begin(), train_idx.end(), rng);
      auto all = torch::tensor(train_idx, torch::kLong).to(device);
      const int64_t nt = static_cast<int64_t>(train_idx.size());
      double sum = 0;
      for (int64_t start = 0; start < nt; start += o.batch_size) {
        auto idx = all.narrow(0, start, std::min<int64_t>(o.batch_size, nt - start));
        auto xb = xd.Rows(idx);
        auto yb = yd.Rows(idx);
        opt.zero_grad();
        torch::Tensor hidden;
        auto logits = model->Forward(xb, &yb, &hidden);
        auto rows = model->RowLoss(logits, yb)[0];  // [B]
        auto features = hidden[0];
        if (epoch >= detach_from) features = features.detach();
        auto predicted = impl->net->forward(features).squeeze(-1);
        auto loss = model->Loss(logits, yb).sum() + lo.lambda * RankingLoss(predicted, rows.detach(), lo.margin);
        loss.backward();
        opt.step();
        sum += loss.item<double>() * static_cast<double>(idx.size(0));
      }
      if (o.on_epoch) o.on_epoch(epoch + 1, o.epochs, sum / static_cast<double>(std::max<int64_t>(1, nt)));
      if (n_val == 0) continue;
      double val;
      {
        torch::NoGradGuard no_grad;
        model->eval();
        val = model->Loss(model->Forward(xv, &yv), yv).sum().item<double>();
      }
      // The link's own validation loss picks the epoch; after detaching, the module keeps
      // improving while the link barely moves, so later equal-loss epochs are preferred.
      if (val <= best_val || (epoch >= detach_from && val <= best_val * 1.001)) {
        best_val = std::min(best_val, val);
        bad = 0;
        torch::NoGradGuard no_grad;
        for (std::size_t i = 0; i < params.size(); ++i) best[i].copy_(params[i].detach());
      } else if (++bad >= o.patience && epoch < detach_from) {
        // Jump to the detached phase rather than stop: the module still needs to learn.
        torch::NoGradGuard no_grad;
        for (std::size_t i = 0; i < n_link; ++i) params[i].copy_(best[i]);
        epoch = std::max(epoch, detach_from - 1);
        bad = 0;
      }
    }
    if (n_val > 0 && o.restore_best) {
      torch::NoGradGuard no_grad;
      for (std::size_t i = 0; i < params.size(); ++i) params[i].copy_(best[i]);
    }
    model->eval();
    impl->net->eval();
    return std::unique_ptr<LossPredictor>(new LossPredictor(std::move(impl)));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("loss prediction training failed: ") + e.what());
  }
}

Result<std::vector<float>> LossPredictor::Predict(const Link& link, const Column& source) const {
  Link::Impl& li = *link.impl();
  if (li.module->hidden_width() != impl_->width) {
    return Status::InvalidArgument("loss prediction: the link's hidden width " + std::to_string(li.module->hidden_width()) +
                                   " differs from the predictor's " + std::to_string(impl_->width));
  }
  MLINK_ASSIGN_OR_RETURN(auto x, li.Pack(source));
  try {
    torch::NoGradGuard no_grad;
    li.module->eval();
    const torch::Device device = li.torch_device();
    x = x.To(device);
    torch::Tensor hidden;
    if (li.module->seq_target()) {
      hidden = li.module->Encode(x).h;
    } else {
      li.module->Forward(x, nullptr, &hidden);
    }
    auto p = impl_->net->forward(hidden[0]).squeeze(-1).to(torch::kCPU).contiguous();
    return std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("loss prediction failed: ") + e.what());
  }
}

Result<std::vector<float>> LossPredictor::RowLosses(const Link& link, const Column& source, const Column& target) {
  Link::Impl& li = *link.impl();
  const LinkSpec& spec = li.spec;
  MLINK_ASSIGN_OR_RETURN(auto x, li.Pack(source));
  MLINK_ASSIGN_OR_RETURN(auto y, internal::PackTargets({spec}, {&target}, spec.target.dim, spec.target.max_len + 1));
  try {
    torch::NoGradGuard no_grad;
    li.module->eval();
    const torch::Device device = li.torch_device();
    auto yd = y.To(device);
    auto l = li.module->RowLoss(li.module->Forward(x.To(device), &yd), yd)[0].to(torch::kCPU).contiguous();
    return std::vector<float>(l.data_ptr<float>(), l.data_ptr<float>() + l.numel());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("row losses failed: ") + e.what());
  }
}

}  // namespace mlink::link
