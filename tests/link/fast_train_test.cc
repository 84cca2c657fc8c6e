// The torch-free trainer against the LibTorch modules: the same loss and gradient on the same
// parameters and rows for every architecture and loss, and the same parameters after training.
#include "link/fast_train.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace mlink::link::internal {
namespace {

Column RandomColumn(const OutputFormat& f, int rows, std::mt19937* rng) {
  std::uniform_real_distribution<float> u(0, 1);
  if (f.kind == FormatKind::kVector) {
    std::vector<float> v;
    for (int i = 0; i < rows * f.dim; ++i) v.push_back(u(*rng));
    return Column::Vectors(f.dim, v);
  }
  std::vector<std::vector<int32_t>> seqs(rows);
  for (auto& s : seqs) {
    const int len = static_cast<int>((*rng)() % (f.max_len + 1));  // 0 (EOS only) to max_len
    for (int t = 0; t < len; ++t) s.push_back(kFirstContentToken + static_cast<int32_t>((*rng)() % (f.vocab - kFirstContentToken)));
  }
  return Column::Sequences(seqs);
}

LinkSpec Spec(OutputFormat source, OutputFormat target, TaskKind task, RegressionLoss loss = RegressionLoss::kMse) {
  LinkSpec s;
  s.source = source;
  s.target = target;
  s.task = task;
  s.regression_loss = loss;
  s.embed_dim = 5;
  s.lstm_hidden = 12;  // not a multiple of 8: the kernels' tails are exercised too
  return s;
}

std::vector<LinkSpec> AllKinds() {
  const auto vec = OutputFormat::Vector(5), seq = OutputFormat::Sequence(11, 4);
  return {Spec(vec, OutputFormat::Vector(3), TaskKind::kSingleLabel),
          Spec(vec, OutputFormat::Vector(4), TaskKind::kMultiLabel),
          Spec(vec, OutputFormat::Vector(4), TaskKind::kBox),
          Spec(vec, OutputFormat::Vector(1), TaskKind::kCount),
          Spec(vec, OutputFormat::Vector(2), TaskKind::kRegression, RegressionLoss::kL1),
          Spec(seq, OutputFormat::Vector(3), TaskKind::kSingleLabel),
          Spec(seq, OutputFormat::Vector(4), TaskKind::kMultiLabel),
          Spec(vec, OutputFormat::Sequence(9, 3), TaskKind::kSequence),
          Spec(seq, OutputFormat::Sequence(9, 3), TaskKind::kSequence)};
}

TEST(FastTrainTest, LossAndGradientEqualTheLibTorchModules) {
  std::mt19937 rng(5);
  for (const LinkSpec& spec : AllKinds()) {
    SCOPED_TRACE(spec.Canonical());
    auto link = Link::Create(spec, 3);
    ASSERT_TRUE(link.ok()) << link.status();
    FlatParams params = (*link)->GetParams();
    // Initial biases are small; larger ones make every gate and logit matter.
    std::normal_distribution<float> noise(0, 0.3f);
    for (float& v : params.data) v += noise(rng);
    Column x = RandomColumn(spec.source, 40, &rng), y = RandomColumn(spec.target, 40, &rng);
    // Repeated rows: repeated sequences are encoded (and decoded) once, weighted by their count.
    std::vector<std::size_t> rows = {3, 17, 0, 25, 8, 31, 12, 39, 5, 22, 14, 1, 30, 3, 17, 3};
    std::vector<float> ours, ref;
    auto loss = FastLossAndGrad(spec, params, x, y, rows, &ours);
    ASSERT_TRUE(loss.ok()) << loss.status();
    auto ref_loss = TorchLossAndGrad(spec, params, x, y, rows, &ref);
    ASSERT_TRUE(ref_loss.ok()) << ref_loss.status();
    EXPECT_GT(*ref_loss, 0.05);
    EXPECT_NEAR(*loss, *ref_loss, 1e-5 * std::max(1.0, *ref_loss));
    ASSERT_EQ(ours.size(), ref.size());
    float scale = 0;
    for (float g : ref) scale = std::max(scale, std::abs(g));
    ASSERT_GT(scale, 1e-3f);
    std::size_t nonzero = 0;
    for (std::size_t k = 0; k < ref.size(); ++k) {
      nonzero += ref[k] != 0;
      ASSERT_NEAR(ours[k], ref[k], 2e-5f * scale + 1e-4f * std::abs(ref[k])) << "parameter value " << k;
    }
    EXPECT_GT(nonzero, ref.size() / 4);  // some ReLU units are dead on these rows
  }
}

TEST(FastTrainTest, TrainingEndsWhereLibTorchTrainingEnds) {
  // Two epochs with early stopping bookkeeping, RMSprop and the best-epoch restore: the links'
  // parameters and losses match Link::Train (LibTorch) from the same start.
  std::mt19937 rng(8);
  for (const LinkSpec& spec : AllKinds()) {
    SCOPED_TRACE(spec.Canonical());
    Column x = RandomColumn(spec.source, 90, &rng), y = RandomColumn(spec.target, 90, &rng);
    TrainOptions o;
    o.epochs = 2;
    o.seed = 4;
    auto alone = Link::Create(spec, o.seed);
    ASSERT_TRUE(alone.ok());
    FlatParams init = (*alone)->GetParams();
    auto rep = (*alone)->Train(x, y, o);
    ASSERT_TRUE(rep.ok()) << rep.status();
    auto fast = FastTrain({spec}, {&x}, {&y}, {init}, o);
    ASSERT_TRUE(fast.ok()) << fast.status();
    const TrainReport& r = fast->reports[0];
    EXPECT_EQ(r.epochs_run, rep->epochs_run);
    EXPECT_EQ(r.validation_rows, 18u);
    EXPECT_NEAR(r.validation_loss, rep->validation_loss, 1e-4 * std::max(1.0, rep->validation_loss));
    EXPECT_NEAR(r.train_loss, rep->train_loss, 1e-4 * std::max(1.0, rep->train_loss));
    FlatParams want = (*alone)->GetParams();
    const FlatParams& got = fast->params[0];
    ASSERT_EQ(got.data.size(), want.data.size());
    EXPECT_EQ(got.names, want.names);
    std::size_t moved = 0;
    for (std::size_t k = 0; k < want.data.size(); ++k) {
      moved += want.data[k] != init.data[k];
      ASSERT_NEAR(got.data[k], want.data[k], 2e-4) << "parameter value " << k;
    }
    EXPECT_GT(moved, want.data.size() / 2);
  }
}

TEST(FastTrainTest, RejectsBadInput) {
  LinkSpec spec = AllKinds()[0];
  std::mt19937 rng(1);
  Column x = RandomColumn(spec.source, 10, &rng), y = RandomColumn(spec.target, 10, &rng);
  FlatParams p = (*Link::Create(spec, 1))->GetParams();
  std::vector<float> g;
  EXPECT_FALSE(FastLossAndGrad(spec, p, x, y, {10}, &g).ok());  // row out of range
  Column wrong = RandomColumn(OutputFormat::Vector(2), 10, &rng);
  EXPECT_FALSE(FastLossAndGrad(spec, p, wrong, y, {0}, &g).ok());
  FlatParams other = (*Link::Create(AllKinds()[5], 1))->GetParams();
  EXPECT_FALSE(FastLossAndGrad(spec, other, x, y, {0}, &g).ok());
  LinkSpec dropout = spec;
  dropout.dropout = 0.2;
  EXPECT_FALSE(FastTrainable(dropout));
  EXPECT_FALSE(FastTrain({dropout}, {&x}, {&y}, {p}, TrainOptions()).ok());
}

}  // namespace
}  // namespace mlink::link::internal
