// Links between real models on real images: the Fashion-MNIST zoo (eval/). Each link must reach
// a stated quality on test images it never saw, for each of the four architectures.
#include <gtest/gtest.h>

#include <map>

#include "mlink/eval/fmnist.h"
#include "mlink/link/batched.h"

namespace mlink::link {
namespace {

eval::FashionMnist Slice(const eval::FashionMnist& d, int start, int count) {
  eval::FashionMnist s;
  s.rows = count;
  s.pixels.assign(d.pixels.begin() + std::size_t(start) * 784, d.pixels.begin() + std::size_t(start + count) * 784);
  s.labels.assign(d.labels.begin() + start, d.labels.begin() + start + count);
  return s;
}

class FashionMnistLinks : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto train = eval::LoadFashionMnist(eval::DefaultFashionMnistDir(), true, 8000);
    auto test = eval::LoadFashionMnist(eval::DefaultFashionMnistDir(), false, 1000);
    ASSERT_TRUE(train.ok()) << train.status();
    ASSERT_TRUE(test.ok()) << test.status();
    auto zoo = eval::TrainZoo(Slice(*train, 0, 6000), 1);
    ASSERT_TRUE(zoo.ok()) << zoo.status();
    zoo_ = new eval::Zoo(std::move(zoo).value());
    link_rows_ = new std::vector<Column>(zoo_->Run(Slice(*train, 6000, 2000)));
    test_rows_ = new std::vector<Column>(zoo_->Run(*test));
  }
  static void TearDownTestSuite() {
    delete zoo_;
    delete link_rows_;
    delete test_rows_;
  }
  static eval::Zoo* zoo_;
  static std::vector<Column>* link_rows_;
  static std::vector<Column>* test_rows_;
};
eval::Zoo* FashionMnistLinks::zoo_ = nullptr;
std::vector<Column>* FashionMnistLinks::link_rows_ = nullptr;
std::vector<Column>* FashionMnistLinks::test_rows_ = nullptr;

enum { kClassifier, kGroup, kAttributes, kInk, kBox, kCaption, kCaption14 };

TEST_F(FashionMnistLinks, EveryArchitectureLearnsARealMapping) {
  std::vector<ModelOutputSpec> specs;
  for (const auto& m : zoo_->models) specs.push_back(m.spec);
  PairwiseOptions po;
  po.train.epochs = 40;
  po.pairs = {{kClassifier, kGroup},   {kClassifier, kAttributes}, {kClassifier, kBox},
              {kClassifier, kCaption}, {kCaption, kGroup},         {kCaption14, kCaption},
              {kGroup, kClassifier}};
  auto res = TrainPairwise(specs, *link_rows_, po);
  ASSERT_TRUE(res.ok()) << res.status();
  std::map<std::pair<int, int>, Evaluation> ev;
  for (const auto& r : *res) {
    auto e = r.link->Evaluate((*test_rows_)[r.source], (*test_rows_)[r.target]);
    ASSERT_TRUE(e.ok()) << e.status();
    ev[{r.source, r.target}] = *e;
    std::printf("link %-10s -> %-10s %-5s %s = %.3f\n", zoo_->models[r.source].name.c_str(),
                zoo_->models[r.target].name.c_str(), r.link->spec().ArchName().c_str(), e->metric_name, e->metric);
  }
  // vec2vec: the 10-class output determines the 4-group output up to the two models' disagreement.
  EXPECT_GE((ev[{kClassifier, kGroup}].metric), 0.90);
  EXPECT_GE((ev[{kClassifier, kAttributes}].metric), 0.85);
  EXPECT_GE((ev[{kClassifier, kBox}].metric), 0.75);
  // vec2seq: class names from class probabilities (the bar: WER < 0.05).
  EXPECT_LT((ev[{kClassifier, kCaption}].metric), 0.05);
  // seq2vec: a caption names the class, which fixes the group.
  EXPECT_GE((ev[{kCaption, kGroup}].metric), 0.88);
  // seq2seq: two different captioners mostly agree.
  EXPECT_LT((ev[{kCaption14, kCaption}].metric), 0.35);
  // Dominance is asymmetric (Table 3): 4 groups cannot recover 10 classes.
  EXPECT_LT((ev[{kGroup, kClassifier}].metric), 0.6);
}

}  // namespace
}  // namespace mlink::link
