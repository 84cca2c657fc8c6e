// The edge serving path on real video: OpenCV's detectors on vtest.avi (from opencv-doc, fetched
// by scripts/setup) recorded into a trace; links trained on the first 10% of the frames predict
// the other detectors on the rest; under a budget well below running everything, the schedule
// beats the Standalone baseline; and mlink-edge's serve loop runs on the same video.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "mlink/edge/link_serving.h"
#include "mlink/edge/record.h"
#include "mlink/edge/scheduler.h"
#include "mlink/edge/site.h"
#include "mlink/edge/trace.h"
#include "mlink/eval/online.h"

namespace mlink::edge {
namespace {

namespace fs = std::filesystem;

std::string VideoDir() {
  const char* env = std::getenv("MLINK_VIDEO_DIR");
  if (env && *env) return env;
  const char* cache = std::getenv("MLINK_CACHE_DIR");
  if (cache && *cache) return std::string(cache) + "/videos";
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  std::string base = xdg && *xdg ? xdg : std::string(std::getenv("HOME") ? std::getenv("HOME") : "/root") + "/.cache";
  return base + "/mlink/videos";
}

EdgeOptions PlazaOptions(const std::string& dir) {
  EdgeOptions o;
  o.site = "plaza";
  o.has_source = true;
  o.source.uri = VideoDir() + "/vtest.avi";
  // Per-model input scales keep the recording short on 2 cores; HOG needs full-size people.
  auto add = [&](const std::string& name, const std::string& kind, const std::string& cascade, double scale) {
    ModelConfig c;
    c.name = name;
    c.kind = kind;
    c.cascade = cascade;
    c.scale = scale;
    o.models.push_back(c);
  };
  add("hog", "hog", "", 1.0);
  add("fullbody", "cascade", "haarcascade_fullbody.xml", 0.5);
  add("lowerbody", "cascade", "haarcascade_lowerbody.xml", 0.5);
  add("motion", "mog2", "", 0.25);
  o.serving.sink = dir + "/frames.jsonl";
  o.data_dir = dir + "/site-data";
  return o;
}

class VtestServing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string((fs::temp_directory_path() / ("mlink-vtest-" + std::to_string(::getpid()))).string());
    fs::create_directories(*dir_);
    ASSERT_TRUE(fs::exists(VideoDir() + "/vtest.avi")) << "run scripts/setup (it fetches vtest.avi from opencv-doc)";
    auto st = Record(PlazaOptions(*dir_), *dir_ + "/trace.db", 240);
    ASSERT_TRUE(st.ok()) << st.status();
    ASSERT_EQ(st->frames, 240);
    EXPECT_EQ(st->failures, 0);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string* dir_;
};
std::string* VtestServing::dir_ = nullptr;

link::Column Rows(const link::Column& c, std::size_t from, std::size_t to) {
  std::vector<std::size_t> idx;
  for (std::size_t i = from; i < to; ++i) idx.push_back(i);
  return c.Select(idx);
}

TEST_F(VtestServing, TraceHoldsEveryModelOnEveryFrame) {
  auto trace = Trace::Open(*dir_ + "/trace.db");
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ((*trace)->FrameCount(), 240);
  ASSERT_EQ((*trace)->models().size(), 4u);
  auto table = (*trace)->Load();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->frames.size(), 240u);
  for (double ms : table->mean_latency_ms) EXPECT_GT(ms, 0);
  // HOG counts people on the plaza: not always zero.
  double sum = 0;
  for (float v : table->outputs[0].values) sum += v;
  EXPECT_GT(sum, 24);
  auto replay = (*trace)->Output("fullbody", table->frames[10]);
  ASSERT_TRUE(replay.ok());
  EXPECT_EQ(replay->vec.size(), 1u);
  EXPECT_FALSE((*trace)->Output("nope", 0).ok());
}

TEST_F(VtestServing, LinksFromTenPercentPredictTheRestAndTheScheduleBeatsStandalone) {
  auto trace = Trace::Open(*dir_ + "/trace.db");
  auto table = (*trace)->Load();
  ASSERT_TRUE(table.ok());
  const std::size_t n = table->frames.size(), n_train = n / 10;
  const auto& infos = (*trace)->models();
  const std::size_t k = infos.size();
  std::vector<link::Column> train, rest;
  for (const auto& c : table->outputs) {
    train.push_back(Rows(c, 0, n_train));
    rest.push_back(Rows(c, n_train, n));
  }
  link::TrainOptions t;
  t.epochs = 100;
  auto serving = LinkServing::Train(infos, train, t);
  ASSERT_TRUE(serving.ok()) << serving.status();

  // Every detector's count predicted from all the others, on the 90% never trained on, against
  // the trivial predictor (the training mean, rounded).
  for (std::size_t j = 0; j < 3; ++j) {
    std::vector<bool> active(k, true);
    active[j] = false;
    auto p = (*serving)->EnsemblePerformance(active, static_cast<int>(j), rest);
    ASSERT_TRUE(p.ok()) << p.status();
    double mean = 0;
    for (float v : train[j].values) mean += v;
    mean = std::round(mean / n_train);
    double hit = 0;
    for (float v : rest[j].values) hit += std::fabs(v - mean) < 0.5;
    double trivial = hit / rest[j].values.size();
    std::printf("count accuracy of %-9s predicted from the others: %.3f (trivial %.3f)\n", infos[j].name.c_str(), *p, trivial);
    EXPECT_GE(*p, 0.2) << infos[j].name;  // measured 0.27-0.48 on this trace
    EXPECT_GE(*p, trivial - 0.05) << infos[j].name;
  }

  // Schedule under a budget of 40% of the cost of running everything.
  SchedulingProblem problem;
  problem.costs = table->mean_latency_ms;
  auto perf = (*serving)->LinkPerformance(train);
  ASSERT_TRUE(perf.ok());
  problem.link_performance = *perf;
  double total = 0;
  for (double c : problem.costs) total += c;
  SchedulerOptions so;
  so.budget = 0.4 * total;
  auto mlink = Select(problem, so);
  auto standalone = SelectStandalone(problem, so);
  ASSERT_TRUE(mlink.ok()) << mlink.status();
  ASSERT_TRUE(standalone.ok());
  EXPECT_LE(mlink->cost, so.budget);
  // Real average output accuracy on the held-out frames: 1 for a model that runs, the measured
  // ensemble performance for a predicted one, 0 for one Standalone does not produce at all.
  double ours = 0, alone = 0;
  for (std::size_t j = 0; j < k; ++j) {
    auto p = (*serving)->EnsemblePerformance(mlink->active, static_cast<int>(j), rest);
    ASSERT_TRUE(p.ok());
    ours += *p;
    alone += standalone->active[j] ? 1.0 : 0.0;
  }
  ours /= k;
  alone /= k;
  std::printf("average output accuracy at 40%% budget: mlink %.3f, standalone %.3f\n", ours, alone);
  EXPECT_GT(ours, alone + 0.1);
}

TEST_F(VtestServing, ServeLoopRunsUnderBudgetAndWritesOneLinePerFrame) {
  EdgeOptions o = PlazaOptions(*dir_);
  o.source.max_frames = 130;
  o.serving.bootstrap_frames = 40;
  o.serving.period_frames = 30;
  o.serving.profile_frames = 2;
  o.serving.link_epochs = 40;
  o.serving.link_threads = 2;  // the links come out the same on any number of threads
  auto trace = Trace::Open(*dir_ + "/trace.db");
  double total = 0;
  for (double c : (*(*trace)->Load()).mean_latency_ms) total += c;
  o.serving.budget_ms = 0.4 * total;
  auto site = Site::Create(o);
  ASSERT_TRUE(site.ok()) << site.status();
  auto st = (*site)->Run(nullptr, 130);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->frames, 130);
  EXPECT_GE(st->periods, 2);
  int64_t predicted = 0;
  for (auto p : st->predicted) predicted += p;
  EXPECT_GT(predicted, 0) << "under 40% of the cost some models must be predicted";
  std::ifstream in(o.serving.sink);
  std::string line;
  int lines = 0;
  bool saw_predicted = false;
  while (std::getline(in, line)) {
    ++lines;
    saw_predicted = saw_predicted || line.find("\"run\":false") != std::string::npos;
  }
  EXPECT_EQ(lines, 130);
  EXPECT_TRUE(saw_predicted);
  EXPECT_LT(st->overhead_ms, 0.2 * st->model_ms) << "link serving and scheduling stay small next to the models";
  // Every frame went to the sample store; active sampling ran the skipped models on some.
  ASSERT_TRUE((*site)->learner()->WaitIdle(60));
  EXPECT_EQ((*site)->learner()->stats().recorded, 130);
  EXPECT_GT(st->sampled, 0);
  EXPECT_LE(st->sampled, 130 * 0.05 + 3);  // the default budget: 5% of frames
  site->reset();

  // A restart serves at once with the links saved by the first run: no bootstrap training.
  fs::remove(o.serving.sink);
  o.source.max_frames = 40;
  auto again = Site::Create(o);
  ASSERT_TRUE(again.ok()) << again.status();
  auto st2 = (*again)->Run(nullptr, 40);
  ASSERT_TRUE(st2.ok()) << st2.status();
  EXPECT_EQ(st2->training_ms, 0);
  int64_t predicted2 = 0;
  for (auto p : st2->predicted) predicted2 += p;
  EXPECT_GT(predicted2, 0) << "links loaded from the first run predict from the first period on";
}

// The online-training experiment's mechanics on this trace played twice: every policy starts
// from the same links, the sampled shares keep to the budget, offline never re-trains.
TEST_F(VtestServing, OnlinePoliciesKeepToTheLabelingBudget) {
  eval::OnlineOptions o;
  o.traces = {*dir_ + "/trace.db", *dir_ + "/trace.db"};
  o.active = {"fullbody", "motion"};
  o.budget = 0.1;
  o.init_frames = 40;
  o.segment_frames = 100;
  o.retrain_samples = 20;  // no policy can re-train within the first segment (frames 40-139)
  o.epochs = 10;
  auto r = eval::RunOnlinePolicies(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->predicted, (std::vector<std::string>{"hog", "lowerbody"}));
  ASSERT_EQ(r->segments.size(), 4u);  // 440 frames after the first 40, the short tail joined
  ASSERT_EQ(r->policies.size(), 4u);
  for (const auto& p : r->policies) {
    ASSERT_EQ(p.segment_p.size(), 4u) << p.name;
    for (double v : p.segment_p) {
      EXPECT_GE(v, 0) << p.name;
      EXPECT_LE(v, 1) << p.name;
    }
  }
  // Before the first re-training the policies serve the same links (loss prediction's start
  // differs: its loss module trains jointly with the links on the initial frames).
  for (int i : {1, 2}) EXPECT_DOUBLE_EQ(r->policies[i].segment_p[0], r->policies[0].segment_p[0]) << r->policies[i].name;
  EXPECT_EQ(r->policies[0].retrains, 0);
  EXPECT_DOUBLE_EQ(r->policies[0].sampled_share, 0);
  EXPECT_NEAR(r->policies[1].sampled_share, 0.1, 0.01);  // periodic: 10 of every 100 frames
  EXPECT_GE(r->policies[1].retrains, 2);
  for (int i : {2, 3}) {
    EXPECT_LE(r->policies[i].sampled_share, 0.1 + 3.0 / 440) << r->policies[i].name;
    EXPECT_GE(r->policies[i].sampled_share, 0.05) << r->policies[i].name;
  }
  EXPECT_FALSE(eval::RunOnlinePolicies({{*dir_ + "/missing.db"}}).ok());
}

TEST(SiteErrors, BadInputNamesTheThing) {
  EdgeOptions o;
  o.site = "s";
  o.has_source = true;
  o.source.uri = "/nonexistent/video.avi";
  ModelConfig a;
  a.name = "a";
  a.kind = "mog2";
  ModelConfig b;
  b.name = "b";
  b.kind = "cascade";
  b.cascade = "no_such_cascade.xml";
  o.models = {a, b};
  auto s = Site::Create(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("no_such_cascade.xml"), std::string::npos) << s.status();
  o.models[1].cascade = "haarcascade_fullbody.xml";
  auto s2 = Site::Create(o);
  ASSERT_FALSE(s2.ok());
  EXPECT_NE(s2.status().message().find("/nonexistent/video.avi"), std::string::npos) << s2.status();
  ModelConfig ts;
  ts.name = "ts";
  ts.kind = "torchscript";
  ts.file = "/nonexistent/model.pt";
  ts.output_dim = 3;
  auto m = CreateModel(ts);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("/nonexistent/model.pt"), std::string::npos);
  o.models[0].declared_cost = 50;
  o.models[1].declared_cost = 80;
  o.source.uri = VideoDir() + "/vtest.avi";
  o.serving.budget_ms = 10;
  auto s3 = Site::Create(o);
  ASSERT_FALSE(s3.ok());
  EXPECT_NE(s3.status().message().find("cannot run even the cheapest model"), std::string::npos) << s3.status();
}

}  // namespace
}  // namespace mlink::edge
