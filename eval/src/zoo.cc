// The Fashion-MNIST model zoo. Learnt models are multinomial/binary logistic regressions on
// pooled pixels (trained here with LibTorch in a few seconds); the others are exact functions of
// the image or of another model's output, like real detectors and captioners would be.
#include <torch/torch.h>

#include "mlink/eval/fmnist.h"

namespace mlink::eval {

namespace {

constexpr int kGroupOf[10] = {0, 1, 0, 0, 0, 2, 0, 2, 3, 2};  // tops, bottoms, footwear, bags
const std::vector<std::vector<int32_t>> kCaption = {{3, 4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13, 14}};
constexpr int kCaptionVocab = 15;

torch::Tensor Pixels(const FashionMnist& d) {
  auto t = torch::from_blob(const_cast<uint8_t*>(d.pixels.data()), {d.rows, 784}, torch::kUInt8);
  return t.to(torch::kFloat) / 255.0;
}

torch::Tensor Pool(const torch::Tensor& x, int k) {
  const int64_t n = x.size(0);
  return torch::avg_pool2d(x.view({n, 1, 28, 28}), k).view({n, -1});
}

// Features of learnt model m: 0 classifier (28x28), 1 group (7x7), 2 attributes (14x14),
// 3 the 14x14 classifier behind caption14.
torch::Tensor Features(const torch::Tensor& x, int m) {
  if (m == 0) return x;
  if (m == 1) return Pool(x, 4);
  return Pool(x, 2);
}

torch::Tensor Targets(const FashionMnist& d, int m) {
  auto labels = torch::from_blob(const_cast<uint8_t*>(d.labels.data()), {d.rows}, torch::kUInt8).to(torch::kLong);
  if (m == 0 || m == 3) return labels;
  if (m == 1) return torch::tensor(std::vector<int64_t>(kGroupOf, kGroupOf + 10)).index_select(0, labels);
  auto attrs = torch::tensor({1, 0, 1, 0, 1, 0, 1, 0, 0, 0,     // upper body
                              0, 0, 0, 0, 0, 1, 0, 1, 0, 1,     // footwear
                              0, 0, 1, 0, 1, 0, 1, 0, 0, 0},    // long sleeves
                             torch::kFloat).view({3, 10}).t();
  return attrs.index_select(0, labels);
}

link::Column ToColumn(const torch::Tensor& t) {
  auto c = t.contiguous().to(torch::kFloat);
  return link::Column::Vectors(static_cast<int>(c.size(1)),
                               std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel()));
}

link::Column Captions(const torch::Tensor& probs) {
  auto arg = probs.argmax(1).contiguous();
  std::vector<std::vector<int32_t>> seqs;
  for (int64_t i = 0; i < arg.size(0); ++i) seqs.push_back(kCaption[arg[i].item<int64_t>()]);
  return link::Column::Sequences(std::move(seqs));
}

constexpr int kLearnt = 4;
constexpr int kOutDims[kLearnt] = {10, 4, 3, 10};

}  // namespace

Result<Zoo> TrainZoo(const FashionMnist& train, uint64_t seed) {
  if (train.rows < 100) return Status::InvalidArgument("training the zoo needs at least 100 rows");
  Zoo zoo;
  using link::FormatKind;
  using link::OutputFormat;
  using link::TaskKind;
  zoo.models = {
      {"classifier", {OutputFormat::Vector(10), TaskKind::kSingleLabel}},
      {"group", {OutputFormat::Vector(4), TaskKind::kSingleLabel}},
      {"attributes", {OutputFormat::Vector(3), TaskKind::kMultiLabel}},
      {"ink", {OutputFormat::Vector(1), TaskKind::kRegression}},
      {"box", {OutputFormat::Vector(4), TaskKind::kBox}},
      {"caption", {OutputFormat::Sequence(kCaptionVocab, 2), TaskKind::kSequence}},
      {"caption14", {OutputFormat::Sequence(kCaptionVocab, 2), TaskKind::kSequence}},
  };
  try {
    torch::manual_seed(seed);
    auto x = Pixels(train);
    for (int m = 0; m < kLearnt; ++m) {
      auto f = Features(x, m);
      auto y = Targets(train, m);
      auto w = torch::zeros({f.size(1), kOutDims[m]}, torch::requires_grad());
      auto b = torch::zeros({kOutDims[m]}, torch::requires_grad());
      torch::optim::Adam opt({w, b}, torch::optim::AdamOptions(0.01));
      const int64_t n = f.size(0), bs = 128;
      for (int epoch = 0; epoch < 5; ++epoch) {
        auto perm = torch::randperm(n);
        for (int64_t s = 0; s < n; s += bs) {
          auto idx = perm.narrow(0, s, std::min(bs, n - s));
          auto z = torch::addmm(b, f.index_select(0, idx), w);
          auto yb = y.index_select(0, idx);
          auto loss = m == 2 ? torch::binary_cross_entropy_with_logits(z, yb) : torch::nn::functional::cross_entropy(z, yb);
          opt.zero_grad();
          loss.backward();
          opt.step();
        }
      }
      auto flat = torch::cat({w.detach().flatten(), b.detach()}).contiguous();
      zoo.weights.emplace_back(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
    }
  } catch (const std::exception& e) {
    return Status::Internal(std::string("training the Fashion-MNIST zoo: ") + e.what());
  }
  return zoo;
}

std::vector<link::Column> Zoo::Run(const FashionMnist& data) const {
  torch::NoGradGuard no_grad;
  auto x = Pixels(data);
  std::vector<torch::Tensor> out(kLearnt);
  for (int m = 0; m < kLearnt; ++m) {
    auto f = Features(x, m);
    auto flat = torch::from_blob(const_cast<float*>(weights[m].data()), {static_cast<int64_t>(weights[m].size())}, torch::kFloat);
    auto w = flat.narrow(0, 0, f.size(1) * kOutDims[m]).view({f.size(1), kOutDims[m]});
    auto b = flat.narrow(0, f.size(1) * kOutDims[m], kOutDims[m]);
    auto z = torch::addmm(b, f, w);
    out[m] = m == 2 ? torch::sigmoid(z) : torch::softmax(z, 1);
  }
  auto inked = x > (128.0 / 255.0);
  auto ink = inked.to(torch::kFloat).mean(1, true);
  // Bounding box of inked pixels, normalised to [0, 1].
  auto img = inked.view({-1, 28, 28});
  auto rows = img.any(2), cols = img.any(1);  // [n, 28]
  auto idx = torch::arange(28).to(torch::kFloat);
  auto first = [&](const torch::Tensor& m) { return torch::where(m, idx, torch::full_like(idx, 28)).amin(1); };
  auto last = [&](const torch::Tensor& m) { return torch::where(m, idx + 1, torch::zeros_like(idx)).amax(1); };
  auto any = rows.any(1);
  auto box = torch::stack({first(cols), first(rows), last(cols), last(rows)}, 1) / 28.0;
  box = torch::where(any.unsqueeze(1), box, torch::zeros_like(box));

  return {ToColumn(out[0]), ToColumn(out[1]), ToColumn(out[2]), ToColumn(ink),
          ToColumn(box),    Captions(out[0]), Captions(out[3])};
}

}  // namespace mlink::eval
