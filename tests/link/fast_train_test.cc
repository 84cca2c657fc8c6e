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

TEST(FastTrainTest, SmallGemmComputesTheProductForEveryShapeAndLayout) {
  // Every row count up to two kernel tiles and more, column counts around the 16- and 8-wide
  // panels, both transpositions, beta 0 and 1, padded strides: against a double-precision
  // product; C's padding columns stay untouched.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  int checked = 0;
  for (int m : {1, 2, 5, 6, 7, 12, 13, 33}) {
    for (int n : {1, 7, 8, 9, 16, 17, 31, 40}) {
      for (int k : {1, 3, 8, 64}) {
        for (int layout = 0; layout < 4; ++layout) {
          const bool ta = layout & 1, tb = layout & 2;
          for (float beta : {0.0f, 1.0f}) {
            const int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
            std::vector<float> a(static_cast<std::size_t>(ta ? k : m) * lda), b(static_cast<std::size_t>(tb ? n : k) * ldb);
            std::vector<float> c(static_cast<std::size_t>(m) * ldc);
            for (float& v : a) v = u(rng);
            for (float& v : b) v = u(rng);
            for (float& v : c) v = u(rng);
            const std::vector<float> c0 = c;
            SmallGemm(ta, tb, m, n, k, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
            for (int i = 0; i < m; ++i) {
              for (int j = 0; j < ldc; ++j) {
                const float got = c[static_cast<std::size_t>(i) * ldc + j];
                if (j >= n) {
                  ASSERT_EQ(got, c0[static_cast<std::size_t>(i) * ldc + j]) << "padding written";
                  continue;
                }
                double want = beta * c0[static_cast<std::size_t>(i) * ldc + j];
                for (int p = 0; p < k; ++p) {
                  const double av = ta ? a[static_cast<std::size_t>(p) * lda + i] : a[static_cast<std::size_t>(i) * lda + p];
                  const double bv = tb ? b[static_cast<std::size_t>(j) * ldb + p] : b[static_cast<std::size_t>(p) * ldb + j];
                  want += av * bv;
                }
                ASSERT_NEAR(got, want, 1e-5 * (k + 1)) << m << "x" << n << "x" << k << " ta " << ta << " tb " << tb
                                                       << " beta " << beta << " at " << i << "," << j;
              }
            }
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 8 * 8 * 4 * 4 * 2);
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

TEST(FastTrainTest, ThreadsSplitTheLinksWithoutChangingTheResult) {
  // Every architecture in one call, trained on 1 and on 3 threads: the same parameters bit for
  // bit, the same losses and the same early stop (patience 1 over 6 epochs stops the group).
  std::mt19937 rng(11);
  std::vector<LinkSpec> specs = AllKinds();
  std::vector<Column> xs, ys;
  std::vector<FlatParams> init;
  for (const LinkSpec& spec : specs) {
    xs.push_back(RandomColumn(spec.source, 70, &rng));
    ys.push_back(RandomColumn(spec.target, 70, &rng));
    init.push_back((*Link::Create(spec, 2))->GetParams());
  }
  std::vector<const Column*> x, y;
  for (std::size_t l = 0; l < specs.size(); ++l) {
    x.push_back(&xs[l]);
    y.push_back(&ys[l]);
  }
  TrainOptions o;
  o.epochs = 6;
  o.patience = 1;
  o.seed = 9;
  int calls = 0;
  o.on_epoch = [&calls](int, int, double loss) {
    ++calls;
    EXPECT_TRUE(std::isfinite(loss));
  };
  auto one = FastTrain(specs, x, y, init, o, 1);
  ASSERT_TRUE(one.ok()) << one.status();
  const int calls_one = calls;
  calls = 0;
  auto three = FastTrain(specs, x, y, init, o, 3);
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(calls, calls_one);
  EXPECT_EQ(calls, one->reports[0].epochs_run);
  for (std::size_t l = 0; l < specs.size(); ++l) {
    SCOPED_TRACE(specs[l].Canonical());
    EXPECT_EQ(one->params[l].data, three->params[l].data);
    EXPECT_NE(one->params[l].data, init[l].data);
    EXPECT_EQ(one->reports[l].validation_loss, three->reports[l].validation_loss);
    EXPECT_EQ(one->reports[l].train_loss, three->reports[l].train_loss);
    EXPECT_EQ(one->reports[l].epochs_run, three->reports[l].epochs_run);
  }
  // Without an early stop, a link trained in the group ends where it ends trained alone.
  o.patience = o.epochs + 1;
  auto group = FastTrain(specs, x, y, init, o, 2);
  ASSERT_TRUE(group.ok()) << group.status();
  for (std::size_t l : {std::size_t{0}, std::size_t{7}, specs.size() - 1}) {
    auto alone = FastTrain({specs[l]}, {x[l]}, {y[l]}, {init[l]}, o, 1);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ(alone->params[0].data, group->params[l].data) << specs[l].Canonical();
    EXPECT_EQ(alone->reports[0].epochs_run, 6);
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
