#include "mlink/link/spec.h"

#include <gtest/gtest.h>

#include "mlink/link/data.h"
#include "mlink/link/metrics.h"

namespace mlink::link {
namespace {

LinkSpec Vec(int in, int out, TaskKind task) {
  LinkSpec s;
  s.source = OutputFormat::Vector(in);
  s.target = OutputFormat::Vector(out);
  s.task = task;
  return s;
}

TEST(LinkSpecTest, ArchitectureAndDefaultHidden) {
  LinkSpec s = Vec(10, 12, TaskKind::kSingleLabel);
  EXPECT_EQ(s.ArchName(), "vec2vec");
  EXPECT_EQ(s.HiddenUnits(), 24);  // the paper's default: 2 x output length
  s.target = OutputFormat::Sequence(20, 5);
  s.task = TaskKind::kSequence;
  EXPECT_EQ(s.ArchName(), "vec2seq");
  EXPECT_EQ(s.HiddenUnits(), 12);
  s.source = OutputFormat::Sequence(9, 3);
  EXPECT_EQ(s.ArchName(), "seq2seq");
}

TEST(LinkSpecTest, HashIsStableAndSensitive) {
  LinkSpec a = Vec(10, 4, TaskKind::kMultiLabel);
  // Pinned: the canonical text and its hash must never change silently (edges and cloud compare it).
  EXPECT_EQ(a.Canonical(), "mlink-link-v1;src=vec:10;tgt=vec:4;task=multi_label;loss=mse;hidden=8;dropout=0");
  EXPECT_EQ(a.HashHex(), a.HashHex());
  LinkSpec b = a;
  b.hidden = 8;  // explicit default is the same link
  EXPECT_EQ(a.Hash(), b.Hash());
  b.hidden = 9;
  EXPECT_NE(a.Hash(), b.Hash());
  LinkSpec c = a;
  c.task = TaskKind::kRegression;
  EXPECT_NE(a.Hash(), c.Hash());
}

TEST(LinkSpecTest, BadSpecsAreClearErrors) {
  EXPECT_NE(Vec(0, 4, TaskKind::kMultiLabel).Validate().message().find("source.dim must be in [1, 1048576], got 0"), std::string::npos);
  EXPECT_NE(Vec(3, 5, TaskKind::kBox).Validate().message().find("needs a 4-D target"), std::string::npos);
  EXPECT_NE(Vec(3, 1, TaskKind::kSingleLabel).Validate().message().find("at least 2 classes"), std::string::npos);
  EXPECT_NE(Vec(3, 4, TaskKind::kSequence).Validate().message().find("does not fit a vector target"), std::string::npos);
  LinkSpec s = Vec(3, 4, TaskKind::kSingleLabel);
  s.target = OutputFormat::Sequence(3, 4);
  s.task = TaskKind::kSequence;
  EXPECT_NE(s.Validate().message().find("vocab must be in [4"), std::string::npos);
  EXPECT_FALSE(ParseTaskKind("ranking").ok());
  EXPECT_EQ(*ParseTaskKind("count"), TaskKind::kCount);
}

TEST(ColumnTest, CheckNamesTheProblem) {
  Column v = Column::Vectors(3, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(v.rows(), 2u);
  EXPECT_TRUE(v.Check(OutputFormat::Vector(3), "x").ok());
  EXPECT_NE(v.Check(OutputFormat::Vector(4), "x").message().find("expected vectors of length 4, got 3"), std::string::npos);
  Column s = Column::Sequences({{3, 4}, {9}});
  EXPECT_NE(s.Check(OutputFormat::Sequence(9, 4), "y").message().find("row 1 has token id 9"), std::string::npos);
  EXPECT_NE(s.Check(OutputFormat::Sequence(10, 1), "y").message().find("more than max_len 1"), std::string::npos);
  Column sel = v.Select({1});
  EXPECT_EQ(sel.values, (std::vector<float>{4, 5, 6}));
}

TEST(MetricsTest, ExactValuesOnSmallCases) {
  Column ref = Column::Vectors(3, {1, 0, 0, 0, 1, 0, 0, 0, 1, 0.2f, 0.7f, 0.1f});
  Column pred = Column::Vectors(3, {0.9f, 0.1f, 0, 0.3f, 0.2f, 0.5f, 0, 0, 1, 0, 1, 0});
  EXPECT_DOUBLE_EQ(Accuracy(pred, ref), 0.75);

  // mAP: class 0 positives {0}; scores .9,.3,0,0 -> AP 1. class 1 positives {1,3}: ranks of
  // scores (.1,.2,0,1) -> row3 (pos) first, row1 (pos) second -> AP 1. class 2 positive {2}:
  // scores (0,.5,1,0) -> row2 first -> AP 1.
  EXPECT_DOUBLE_EQ(MeanAveragePrecision(pred, ref), 1.0);
  Column s2 = Column::Vectors(1, {0.9f, 0.8f, 0.1f});
  Column r2 = Column::Vectors(1, {0, 1, 1});
  // ranking: row0 (neg), row1 (pos, prec 1/2), row2 (pos, prec 2/3) -> AP = (0.5 + 0.6667) / 2
  EXPECT_NEAR(MeanAveragePrecision(s2, r2), (0.5 + 2.0 / 3.0) / 2, 1e-12);

  Column b1 = Column::Vectors(4, {0, 0, 2, 2});
  Column b2 = Column::Vectors(4, {1, 1, 3, 3});
  EXPECT_NEAR(MeanIoU(b1, b2), 1.0 / 7.0, 1e-9);

  Column c1 = Column::Vectors(1, {1.4f, 2.6f, 3.0f, 0.0f});
  Column c2 = Column::Vectors(1, {1.0f, 2.0f, 3.2f, 1.0f});
  EXPECT_DOUBLE_EQ(CountAccuracy(c1, c2), 0.5);
  EXPECT_NEAR(MeanAbsoluteError(c1, c2), (0.4 + 0.6 + 0.2 + 1.0) / 4, 1e-6);

  Column w1 = Column::Sequences({{3, 4, 5}, {6}});
  Column w2 = Column::Sequences({{3, 5}, {6, 7}});
  // edits: row0 delete 4 -> 1; row1 insert 7 -> 1; ref words 2 + 2 -> WER 0.5
  EXPECT_DOUBLE_EQ(WordErrorRate(w1, w2), 0.5);
  EXPECT_EQ(EditDistance({1, 2, 3}, {3, 2, 1}), 2);

  Evaluation e = Evaluate(TaskKind::kSequence, w1, w2);
  EXPECT_DOUBLE_EQ(e.performance, 0.5);
  Evaluation r = Evaluate(TaskKind::kRegression, Column::Vectors(1, {2, 2}), Column::Vectors(1, {1, 3}));
  EXPECT_DOUBLE_EQ(r.performance, 0.0) << "predicting the mean scores p = 0";
}

}  // namespace
}  // namespace mlink::link
