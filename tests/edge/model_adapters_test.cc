// Model adapters with real model files: a TorchScript module and an ONNX network (through
// cv::dnn) exported here by Debian's python3 with PyTorch, and trace replay.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "mlink/edge/models.h"
#include "mlink/edge/trace.h"

namespace mlink::edge {
namespace {

namespace fs = std::filesystem;

class AdapterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string((fs::temp_directory_path() / ("mlink-adapters-" + std::to_string(::getpid()))).string());
    fs::create_directories(*dir_);
    std::string cmd = "/usr/bin/python3 " + std::string(MLINK_TEST_DATA) + "/make_models.py " + *dir_ + " 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << "exporting test models with python3-torch failed";
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static ModelConfig Mean3(const std::string& kind, const std::string& file, const std::string& task) {
    ModelConfig c;
    c.name = kind + "-mean3";
    c.kind = kind;
    c.file = *dir_ + "/" + file;
    c.input_width = 8;
    c.input_height = 8;
    c.grayscale = true;
    c.input_scale = 1.0 / 255;
    c.output_dim = 3;
    c.task = task;
    return c;
  }
  static Frame Grey(int value) { return Frame{cv::Mat(16, 24, CV_8UC3, cv::Scalar(value, value, value)), 0, 0}; }
  static std::string* dir_;
};
std::string* AdapterTest::dir_ = nullptr;

TEST_F(AdapterTest, TorchScriptModelComputesItsFunction) {
  auto m = CreateModel(Mean3("torchscript", "mean3.pt", "regression"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->info().format.dim, 3);
  auto out = (*m)->Run(Grey(100));
  ASSERT_TRUE(out.ok()) << out.status();
  const float mean = 100.0f / 255.0f;
  ASSERT_EQ(out->vec.size(), 3u);
  EXPECT_NEAR(out->vec[0], mean, 1e-5);
  EXPECT_NEAR(out->vec[1], 2 * mean, 1e-5);
  EXPECT_NEAR(out->vec[2], 3 * mean, 1e-5);
  // As a single-label model its outputs (logits) become probabilities.
  auto cls = CreateModel(Mean3("torchscript", "mean3.pt", "single_label"));
  auto p = (*cls)->Run(Grey(100));
  ASSERT_TRUE(p.ok());
  EXPECT_NEAR(p->vec[0] + p->vec[1] + p->vec[2], 1.0, 1e-5);
  EXPECT_GT(p->vec[2], p->vec[0]);
  // The wrong output_dim is reported per frame, not a crash.
  ModelConfig wrong = Mean3("torchscript", "mean3.pt", "regression");
  wrong.output_dim = 4;
  auto w = (*CreateModel(wrong))->Run(Grey(1));
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("gave 3 values"), std::string::npos) << w.status();
}

TEST_F(AdapterTest, OnnxNetworkThroughCvDnn) {
  if (!fs::exists(*dir_ + "/mean3.onnx")) GTEST_FAIL() << "ONNX export unavailable in this python3-torch";
  auto m = CreateModel(Mean3("dnn", "mean3.onnx", "regression"));
  ASSERT_TRUE(m.ok()) << m.status();
  auto out = (*m)->Run(Grey(51));
  ASSERT_TRUE(out.ok()) << out.status();
  const float mean = 51.0f / 255.0f;
  EXPECT_NEAR(out->vec[0], mean, 1e-4);
  EXPECT_NEAR(out->vec[2], 3 * mean, 1e-4);
}

TEST_F(AdapterTest, BadModelFilesAreClearErrors) {
  std::string junk = *dir_ + "/junk.pt";
  std::ofstream(junk) << "not a model";
  ModelConfig c = Mean3("torchscript", "junk.pt", "regression");
  auto m = CreateModel(c);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("junk.pt"), std::string::npos);
  EXPECT_NE(m.status().message().find("not a loadable TorchScript file"), std::string::npos) << m.status();
  ModelConfig u;
  u.name = "x";
  u.kind = "teleport";
  EXPECT_NE(CreateModel(u).status().message().find("unknown kind 'teleport'"), std::string::npos);
}

TEST_F(AdapterTest, TraceReplayReturnsWhatWasRecorded) {
  std::string path = *dir_ + "/t.db";
  {
    auto t = Trace::Create(path, "test");
    ASSERT_TRUE(t.ok()) << t.status();
    ModelInfo a{"a", "hog", link::OutputFormat::Vector(1), link::TaskKind::kCount, 0};
    ModelInfo b{"b", "mog2", link::OutputFormat::Vector(2), link::TaskKind::kRegression, 0};
    ASSERT_TRUE((*t)->SetModels({a, b}).ok());
    ASSERT_TRUE((*t)->AddFrame(7, 0.28, {ModelOutput{{3}, {}}, ModelOutput{{0.5f, 0.25f}, {}}}, {40, 2}, {true, true}).ok());
    ASSERT_TRUE((*t)->AddFrame(8, 0.32, {ModelOutput{{}, {}}, ModelOutput{{0.1f, 0.2f}, {}}}, {41, 2}, {false, true}).ok());
  }
  ModelConfig c;
  c.name = "replayed-b";
  c.kind = "trace";
  c.trace = path;
  c.trace_model = "b";
  auto m = CreateModel(c);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->info().format.dim, 2);
  Frame f;
  f.index = 7;
  EXPECT_EQ((*m)->Run(f)->vec, (std::vector<float>{0.5f, 0.25f}));
  f.index = 99;
  EXPECT_EQ((*m)->Run(f).status().code(), StatusCode::kNotFound);
  c.trace_model = "a";
  auto a = CreateModel(c);
  f.index = 8;
  EXPECT_EQ((*a)->Run(f).status().code(), StatusCode::kUnavailable) << "a failed when recorded";
  auto table = (*Trace::Open(path))->Load();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->frames, (std::vector<int64_t>{7})) << "frames where a model failed are left out";
  EXPECT_DOUBLE_EQ(table->mean_latency_ms[0], 40);
}

}  // namespace
}  // namespace mlink::edge
