// Edge learning: the sample store (real SQLite), the active samplers, learned loss prediction, and
// a site's learner federating with a real aggregator over mutual TLS on loopback.
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>

#include <sys/wait.h>

#include "../support/fed_support.h"
#include "../support/site_support.h"
#include "mlink/cloud/aggregator.h"
#include "mlink/common/sqlite.h"
#include "mlink/edge/learner.h"
#include "mlink/edge/link_serving.h"
#include "mlink/edge/sample_store.h"
#include "mlink/edge/sampler.h"
#include "mlink/link/loss_prediction.h"

namespace mlink::edge {
namespace {

using mlink::testing::OracleSpec;

ModelInfo VecModel(const std::string& name, int dim, link::TaskKind task) {
  ModelInfo m;
  m.name = name;
  m.kind = "test";
  m.format = link::OutputFormat::Vector(dim);
  m.task = task;
  return m;
}

ModelOutput Vec(std::vector<float> v) {
  ModelOutput o;
  o.vec = std::move(v);
  return o;
}

class SampleStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = mlink::testing::TempDir("store"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
  std::vector<ModelInfo> models_ = {VecModel("a", 2, link::TaskKind::kRegression), VecModel("b", 1, link::TaskKind::kCount)};
};

TEST_F(SampleStoreTest, KeepsSampledRowsAlignedAndSurvivesRestart) {
  {
    auto s = SampleStore::Open(dir_ + "/s.db");
    ASSERT_TRUE(s.ok()) << s.status();
    for (int f = 0; f < 10; ++f) {
      const bool sampled = f % 2 == 0;
      ASSERT_TRUE((*s)->Add(models_, f, f * 0.1, {Vec({float(f), float(-f)}), Vec({float(10 * f)})}, {true, sampled}, sampled).ok());
    }
    EXPECT_EQ((*s)->SampledCount(), 5);
    EXPECT_EQ((*s)->FrameCount(), 10);
  }
  auto s = SampleStore::Open(dir_ + "/s.db");
  ASSERT_TRUE(s.ok()) << s.status();
  auto rows = (*s)->Sampled(models_);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->frames, (std::vector<int64_t>{0, 2, 4, 6, 8}));
  EXPECT_EQ(rows->outputs[0].values, (std::vector<float>{0, 0, 2, -2, 4, -4, 6, -6, 8, -8}));
  EXPECT_EQ(rows->outputs[1].values, (std::vector<float>{0, 20, 40, 60, 80}));
  auto newest = (*s)->Sampled(models_, 2);
  EXPECT_EQ(newest->frames, (std::vector<int64_t>{6, 8}));
}

TEST_F(SampleStoreTest, EvictsOldestWithinBoundsAndKeepsLabelledFrames) {
  SampleStoreOptions o;
  o.max_sampled = 10;
  o.recent_frames = 20;
  o.max_labels = 1000;
  auto s = SampleStore::Open(dir_ + "/s.db", o);
  ASSERT_TRUE(s.ok());
  // Frame 1 (not sampled) gets a label early, so it must survive eviction of unsampled frames.
  for (int f = 0; f < 400; ++f) {
    const bool sampled = f % 4 == 0;
    ASSERT_TRUE((*s)->Add(models_, f, f * 0.04, {Vec({1, 2}), Vec({3})}, {true, sampled}, sampled).ok());
    if (f == 1) {
      auto r = (*s)->AddLabels({{1, -1, {1.f, 2.f}}}, 2);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->stored, 1);
    }
  }
  // Eviction runs every 64 additions: at most one batch over each bound.
  EXPECT_LE((*s)->SampledCount(), 10 + 64);
  EXPECT_GE((*s)->SampledCount(), 10);
  EXPECT_LE((*s)->FrameCount(), 10 + 20 + 1 + 64);
  auto rows = (*s)->Sampled(models_);
  ASSERT_FALSE(rows->frames.empty());
  EXPECT_EQ(rows->frames.back(), 396);          // the newest are kept
  EXPECT_GT(rows->frames.front(), 200);         // the oldest went first
  auto lab = (*s)->LabelledRows(models_[0], 2);
  ASSERT_TRUE(lab.ok());
  EXPECT_EQ(lab->frames, (std::vector<int64_t>{1}));
}

TEST_F(SampleStoreTest, LabelsMatchByFrameOrTimestampAndReportTheRest) {
  auto s = SampleStore::Open(dir_ + "/s.db");
  for (int f = 0; f < 5; ++f) ASSERT_TRUE((*s)->Add(models_, f, 1.0 + f * 0.5, {Vec({float(f), 0}), Vec({0})}, {true, false}, false).ok());
  std::vector<Label> labels = {{3, -1, {0, 1}}, {-1, 2.01, {1, 0}}, {42, -1, {0, 1}}, {-1, 9.0, {0, 1}}, {0, -1, {1}}};
  auto r = (*s)->AddLabels(labels, 2, 0.05);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stored, 2);
  ASSERT_EQ(r->rejected.size(), 3u);
  EXPECT_NE(r->rejected[0].find("frame 42"), std::string::npos) << r->rejected[0];
  EXPECT_NE(r->rejected[2].find("expected 2"), std::string::npos) << r->rejected[2];
  auto lab = (*s)->LabelledRows(models_[0], 2);
  EXPECT_EQ(lab->frames, (std::vector<int64_t>{2, 3}));  // t=2.01 is frame 2 (t=2.0)
  EXPECT_EQ(lab->source.values, (std::vector<float>{2, 0, 3, 0}));
  EXPECT_EQ(lab->labels.values, (std::vector<float>{1, 0, 0, 1}));
}

TEST_F(SampleStoreTest, CorruptFileIsAClearErrorNotAReset) {
  { std::ofstream(dir_ + "/bad.db") << "this is not a database, just text that fills a page or so..............."; }
  auto s = SampleStore::Open(dir_ + "/bad.db");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kDataLoss) << s.status();
  EXPECT_NE(s.status().message().find("bad.db"), std::string::npos);
}

TEST(ParseLabelsTest, CsvJsonLinesAndErrorsWithLineNumbers) {
  auto csv = ParseLabels("frame,label\n3,2\nt=1.5,0\n", 3, true);
  ASSERT_TRUE(csv.ok()) << csv.status();
  ASSERT_EQ(csv->size(), 2u);
  EXPECT_EQ((*csv)[0].frame, 3);
  EXPECT_EQ((*csv)[0].value, (std::vector<float>{0, 0, 1}));
  EXPECT_DOUBLE_EQ((*csv)[1].timestamp_s, 1.5);
  auto js = ParseLabels("{\"frame\": 7, \"label\": 1}\n\n{\"ts\": 2.5, \"label\": [0.2, 0.3, 0.5]}\n", 3, true);
  ASSERT_TRUE(js.ok()) << js.status();
  EXPECT_EQ((*js)[0].value, (std::vector<float>{0, 1, 0}));
  EXPECT_EQ((*js)[1].value, (std::vector<float>{0.2f, 0.3f, 0.5f}));
  auto bad_class = ParseLabels("1,0\n2,7\n", 3, true);
  ASSERT_FALSE(bad_class.ok());
  EXPECT_NE(bad_class.status().message().find("line 2"), std::string::npos) << bad_class.status();
  auto bad_json = ParseLabels("{\"frame\": 1}\n", 3, true);
  ASSERT_FALSE(bad_json.ok());
  EXPECT_NE(bad_json.status().message().find("label"), std::string::npos);
  EXPECT_FALSE(ParseLabels("1,abc\n", 3, true).ok());
  EXPECT_FALSE(ParseLabels("-4,1\n", 3, true).ok());
  EXPECT_FALSE(ParseLabels("1,nan\n", 1, false).ok());
}

TEST(SamplerTest, PeriodicTakesTheFirstFramesOfEveryPeriod) {
  auto s = Sampler::Create({"periodic", 0.1, 50});
  ASSERT_TRUE(s.ok());
  std::vector<int64_t> taken;
  for (int64_t f = 0; f < 200; ++f) {
    if (s->Decide(f)) taken.push_back(f);
  }
  ASSERT_EQ(taken.size(), 20u);
  EXPECT_EQ(taken[0], 0);
  EXPECT_EQ(taken[4], 4);
  EXPECT_EQ(taken[5], 50);
}

TEST(SamplerTest, ScorePoliciesStayWithinBudgetAndPreferHighScores) {
  for (const char* policy : {"uncertainty", "loss_prediction"}) {
    auto s = Sampler::Create({policy, 0.1, 100, 200, 3});
    ASSERT_TRUE(s.ok());
    std::mt19937 rng(3);
    std::uniform_real_distribution<double> u(0, 1);
    double in = 0, out = 0;
    int n_in = 0, n_out = 0;
    for (int64_t f = 0; f < 5000; ++f) {
      const double score = u(rng);
      if (s->Decide(f, score)) {
        in += score;
        ++n_in;
      } else {
        out += score;
        ++n_out;
      }
    }
    EXPECT_LE(n_in, 5000 * 0.1 + 3) << policy;
    EXPECT_GE(n_in, 5000 * 0.07) << policy;
    EXPECT_GT(in / n_in, 0.85) << policy;  // taken from the top decile
    EXPECT_LT(out / n_out, 0.5) << policy;
  }
  EXPECT_FALSE(Sampler::Create({"sometimes", 0.1}).ok());
  EXPECT_FALSE(Sampler::Create({"periodic", 1.5}).ok());
  auto none = Sampler::Create({"none", 0.5});
  for (int f = 0; f < 100; ++f) EXPECT_FALSE(none->Decide(f, 1.0));
}

// A link whose errors concentrate where the target is noise: the loss module, trained jointly,
// must rank those rows above the clean ones, and the link must stay accurate on the clean rows.
TEST(LossPredictionTest, RanksNoisyRowsAboveCleanOnes) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0, 1);
  const int n = 1200;
  std::vector<float> x, y;
  std::vector<bool> noisy;
  for (int i = 0; i < n; ++i) {
    const float a = u(rng), b = u(rng);
    const bool is_noisy = a > 0.6f;
    const int cls = is_noisy ? static_cast<int>(u(rng) * 3) % 3 : (b < 0.5f ? 0 : 1);
    x.insert(x.end(), {a, b});
    std::vector<float> t(3, 0.f);
    t[cls] = 1;
    y.insert(y.end(), t.begin(), t.end());
    noisy.push_back(is_noisy);
  }
  link::LinkSpec spec;
  spec.source = link::OutputFormat::Vector(2);
  spec.target = link::OutputFormat::Vector(3);
  spec.task = link::TaskKind::kSingleLabel;
  spec.hidden = 16;
  auto l = link::Link::Create(spec, 3);
  ASSERT_TRUE(l.ok());
  link::Column xs = link::Column::Vectors(2, x), ys = link::Column::Vectors(3, y);
  link::TrainOptions t;
  t.epochs = 40;
  auto lp = link::LossPredictor::TrainJointly(l->get(), xs, ys, t);
  ASSERT_TRUE(lp.ok()) << lp.status();
  auto pred = (*lp)->Predict(**l, xs);
  ASSERT_TRUE(pred.ok()) << pred.status();
  auto actual = link::LossPredictor::RowLosses(**l, xs, ys);
  ASSERT_TRUE(actual.ok());
  double p_noisy = 0, p_clean = 0;
  int c_noisy = 0, c_clean = 0, clean_right = 0;
  auto probs = (*l)->Predict(xs);
  for (int i = 0; i < n; ++i) {
    (noisy[i] ? p_noisy : p_clean) += (*pred)[i];
    (noisy[i] ? c_noisy : c_clean) += 1;
    if (!noisy[i]) {
      const float* p = probs->row(i);
      const int arg = static_cast<int>(std::max_element(p, p + 3) - p);
      clean_right += y[i * 3 + arg] == 1.f;
    }
  }
  EXPECT_GT(p_noisy / c_noisy, p_clean / c_clean + 0.2);
  EXPECT_GE(static_cast<double>(clean_right) / c_clean, 0.9);
  // Rank agreement with the actual losses: concordant pairs well above chance (0.5).
  int concordant = 0, pairs = 0;
  for (int i = 0; i + 1 < n; i += 2) {
    if ((*actual)[i] == (*actual)[i + 1]) continue;
    ++pairs;
    concordant += ((*actual)[i] > (*actual)[i + 1]) == ((*pred)[i] > (*pred)[i + 1]);
  }
  EXPECT_GT(static_cast<double>(concordant) / pairs, 0.7);
}

// Swapping in another link (a global one that validates better) changes exactly that link.
TEST(LinkServingTest, ReplaceLinkSwapsOneLinkAndKeepsTheRest) {
  std::vector<ModelInfo> models = {VecModel("a", 2, link::TaskKind::kRegression), VecModel("b", 1, link::TaskKind::kRegression),
                                   VecModel("c", 1, link::TaskKind::kRegression)};
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> a, b, c;
  for (int i = 0; i < 200; ++i) {
    const float x = u(rng), y = u(rng);
    a.insert(a.end(), {x, y});
    b.push_back(x + y);
    c.push_back(x - y);
  }
  std::vector<link::Column> cols = {link::Column::Vectors(2, a), link::Column::Vectors(1, b), link::Column::Vectors(1, c)};
  link::TrainOptions t;
  t.epochs = 20;
  auto serving = LinkServing::Train(models, cols, t);
  ASSERT_TRUE(serving.ok()) << serving.status();
  auto other = link::Link::Create((*serving)->link(0, 1).spec(), 99);
  ASSERT_TRUE(other.ok());
  auto swapped = (*serving)->ReplaceLink(0, 1, **other, cols, t);
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  EXPECT_EQ((*swapped)->link(0, 1).GetParams().data, (*other)->GetParams().data);
  EXPECT_EQ((*swapped)->link(2, 1).GetParams().data, (*serving)->link(2, 1).GetParams().data);
  EXPECT_EQ((*swapped)->link(0, 2).GetParams().data, (*serving)->link(0, 2).GetParams().data);
  std::vector<bool> active = {true, false, false};
  std::vector<ModelOutput> in = {Vec({0.3f, 0.4f}), ModelOutput(), ModelOutput()};
  auto p_old = (*serving)->Predict(active, in);
  auto p_new = (*swapped)->Predict(active, in);
  ASSERT_TRUE(p_old.ok() && p_new.ok());
  EXPECT_EQ((*p_old)[2].vec, (*p_new)[2].vec);   // c's ensemble untouched
  EXPECT_NE((*p_old)[1].vec, (*p_new)[1].vec);   // b now comes from the swapped link
  auto wrong = link::Link::Create((*serving)->link(1, 2).spec(), 1);
  EXPECT_FALSE((*serving)->ReplaceLink(0, 1, **wrong, cols, t).ok());
  EXPECT_FALSE((*serving)->ReplaceLink(1, 1, **other, cols, t).ok());
}

// --- a site's learner against a real aggregator --------------------------------------------

class LearnerFederationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(mlink::testing::NewSuiteCerts(&certs_, "learner-certs", "site-a site-b site-c"));
  }
  static void TearDownTestSuite() { mlink::testing::DeleteSuiteDir(&certs_); }
  void SetUp() override { dir_ = mlink::testing::TestDir("learner-"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  cloud::CloudOptions Cloud(int min_edges) {
    return mlink::testing::OracleCloud(*certs_, dir_ + "/cloud", min_edges);
  }

  LearningOptions Learning(const std::string& site, uint16_t port) {
    LearningOptions o = mlink::testing::OracleLearning(*certs_, site, port);
    o.http_port = 0;
    return o;
  }

  static bool WaitFor(const std::function<bool()>& ok, double seconds) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      if (ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return ok();
  }

  // The deployed model "m" sees a shifted domain: its class probabilities put the true class's
  // mass on class (c + shift) % 4. The oracle link has to learn the permutation back.
  static void Feed(Learner* l, int shift, int frames, int labels, uint64_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> cls(0, 3);
    std::vector<Label> lab;
    std::vector<ModelInfo> models = {VecModel("m", 4, link::TaskKind::kSingleLabel)};
    for (int f = 0; f < frames; ++f) {
      const int c = cls(rng);
      std::vector<float> p(4, 0.05f);
      p[(c + shift) % 4] = 0.85f;
      l->Submit(f, f * 0.1, {Vec(p)}, {true}, false);
      if (f < labels) {
        std::vector<float> one(4, 0.f);
        one[c] = 1;
        lab.push_back({f, -1, one});
      }
    }
    l->SubmitLabels(lab);
    const int64_t want = static_cast<int64_t>(lab.size());
    ASSERT_TRUE(WaitFor([&] { return l->stats().labels >= want && l->stats().recorded >= frames; }, 60));
  }

  static std::string* certs_;
  std::string dir_;
};
std::string* LearnerFederationTest::certs_ = nullptr;

std::vector<ModelInfo> OneModel() { return {VecModel("m", 4, link::TaskKind::kSingleLabel)}; }

TEST_F(LearnerFederationTest, SitesJoinRoundsAndASiteWithoutLabelsServesTheGlobalOracle) {
  auto agg = cloud::Aggregator::Start(Cloud(2));
  ASSERT_TRUE(agg.ok()) << agg.status();
  const uint16_t port = (*agg)->port();
  auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), Learning("site-a", port));
  auto b = Learner::Start("site-b", dir_ + "/b", OneModel(), Learning("site-b", port));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  Feed(a->get(), 1, 300, 200, 1);
  Feed(b->get(), 1, 300, 200, 2);
  // Labels arrived after the first global link: the next global link (or a reconnect) would
  // be needed to join; rounds keep going as both sites answer every broadcast.
  ASSERT_TRUE(WaitFor([&] { return (*a)->stats().rounds_joined >= 3 && (*b)->stats().rounds_joined >= 3; }, 60))
      << "a joined " << (*a)->stats().rounds_joined << ", b joined " << (*b)->stats().rounds_joined;
  auto g = (*agg)->GetLink("m->oracle");
  ASSERT_TRUE(g.ok());
  EXPECT_GE(g->rounds_completed, 3u);

  // Site c has the same shift but no labels at all: it learns nothing locally, and serves the
  // global oracle link, which undoes the shift.
  auto c = Learner::Start("site-c", dir_ + "/c", OneModel(), Learning("site-c", port));
  ASSERT_TRUE(c.ok()) << c.status();
  Feed(c->get(), 1, 50, 0, 3);
  ASSERT_TRUE(WaitFor([&] { return (*c)->oracle() != nullptr; }, 30));
  auto oracle = (*c)->oracle();
  EXPECT_EQ(oracle->choice(), "global");
  int right = 0;
  for (int cls = 0; cls < 4; ++cls) {
    std::vector<float> p(4, 0.05f);
    p[(cls + 1) % 4] = 0.85f;
    auto v = oracle->Predict(Vec(p));
    ASSERT_TRUE(v.ok()) << v.status();
    right += std::max_element(v->begin(), v->end()) - v->begin() == cls;
  }
  EXPECT_EQ(right, 4);
  EXPECT_EQ((*c)->stats().updates_sent, 0);  // nothing to contribute without samples
  EXPECT_GT((*a)->stats().bytes_sent, 0);
  EXPECT_EQ((*a)->stats().updates_rejected, 0);
}

TEST_F(LearnerFederationTest, UpdateKeptOfflineIsSentIfItsRoundIsOpenAndDroppedIfNot) {
  auto agg = cloud::Aggregator::Start(Cloud(2));
  ASSERT_TRUE(agg.ok()) << agg.status();
  const auto params = (*agg)->GetLink("m->oracle")->params;
  // Two updates computed "while offline": one for the open round 0, one for a closed round 5.
  {
    auto l = Learner::Start("site-a", dir_ + "/a", OneModel(), Learning("site-a", 0));
    ASSERT_TRUE(l.ok()) << l.status();
  }
  {
    auto db = sql::Database::Open(dir_ + "/a/federation.db");
    ASSERT_TRUE(db.ok()) << db.status();
    std::vector<float> delta(params.size(), 0.5f);
    for (int64_t round : {0, 5}) {
      auto ins = (*db)->Prepare("INSERT INTO pending (link, round, delta, samples, loss, metric) VALUES ('m->oracle', ?, ?, 10, 0, 0)");
      ASSERT_TRUE(ins.ok());
      ASSERT_TRUE(ins->Bind(1, round).BindBlob(2, delta.data(), delta.size() * sizeof(float)).Run().ok());
    }
  }
  auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), Learning("site-a", (*agg)->port()));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(WaitFor([&] { return (*a)->stats().rounds_joined == 1 && (*a)->stats().updates_dropped == 1; }, 30))
      << "joined " << (*a)->stats().rounds_joined << " dropped " << (*a)->stats().updates_dropped;
  EXPECT_EQ((*agg)->GetLink("m->oracle")->pending_updates, 1u);  // held for round 0
  (*a)->Stop();
  auto db = sql::Database::Open(dir_ + "/a/federation.db");
  auto q = (*db)->Prepare("SELECT count(*) FROM pending");
  ASSERT_TRUE(q.ok() && *q->Step());
  EXPECT_EQ(q->ColumnInt(0), 0);  // acknowledged and dropped updates are gone from disk
}

TEST_F(LearnerFederationTest, SitesFederateThroughSecureAggregation) {
  cloud::CloudOptions co = Cloud(3);
  co.links[0].secure_aggregation.enabled = true;
  co.links[0].secure_aggregation.phase_timeout_s = 10;
  auto agg = cloud::Aggregator::Start(co);
  ASSERT_TRUE(agg.ok()) << agg.status();
  const uint16_t port = (*agg)->port();
  std::vector<std::unique_ptr<Learner>> sites;
  for (const char* name : {"site-a", "site-b", "site-c"}) {
    LearningOptions o = Learning(name, port);
    o.federation.links[0].secure_aggregation = true;
    auto l = Learner::Start(name, dir_ + "/" + name, OneModel(), o);
    ASSERT_TRUE(l.ok()) << l.status();
    sites.push_back(std::move(*l));
  }
  for (std::size_t k = 0; k < sites.size(); ++k) Feed(sites[k].get(), 1, 300, 200, 11 + k);
  ASSERT_TRUE(WaitFor([&] {
    for (auto& s : sites) {
      if (s->stats().rounds_joined < 2) return false;
    }
    return true;
  }, 90)) << "joined " << sites[0]->stats().rounds_joined << ", " << sites[1]->stats().rounds_joined << ", "
          << sites[2]->stats().rounds_joined;
  auto g = (*agg)->GetLink("m->oracle");
  ASSERT_TRUE(g.ok());
  EXPECT_GE(g->rounds_completed, 2u);
  EXPECT_NE(g->params, (*link::Link::Create(OracleSpec(), 3))->GetParams().data);  // it learned
  for (auto& s : sites) {
    EXPECT_EQ(s->stats().updates_rejected, 0);
    s->Stop();
  }
  (*agg)->Stop();
  // Neither side kept an individual update: the sites keep nothing pending, the aggregator
  // stores no update rows for the link.
  for (const char* name : {"site-a", "site-b", "site-c"}) {
    auto db = sql::Database::Open(dir_ + "/" + name + "/federation.db");
    ASSERT_TRUE(db.ok()) << db.status();
    auto q = (*db)->Prepare("SELECT count(*) FROM pending");
    ASSERT_TRUE(q.ok() && *q->Step());
    EXPECT_EQ(q->ColumnInt(0), 0) << name;
  }
  auto cloud_db = sql::Database::Open(dir_ + "/cloud/aggregator.db");
  ASSERT_TRUE(cloud_db.ok()) << cloud_db.status();
  auto rows = (*cloud_db)->Prepare("SELECT count(*) FROM updates");
  ASSERT_TRUE(rows.ok() && *rows->Step());
  EXPECT_EQ(rows->ColumnInt(0), 0);
}

TEST_F(LearnerFederationTest, UnreachableAggregatorKeepsTheSiteLearningAndRetrying) {
  // Nothing listens on this port: the learner keeps retrying, and labels still train locally.
  auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), Learning("site-a", 1));
  ASSERT_TRUE(a.ok()) << a.status();
  Feed(a->get(), 2, 200, 120, 4);
  ASSERT_TRUE(WaitFor([&] { return (*a)->oracle() != nullptr; }, 30));
  EXPECT_EQ((*a)->oracle()->choice(), "local");
  EXPECT_FALSE((*a)->stats().connected);
  EXPECT_EQ((*a)->stats().labels, 120);
}

// Local differential privacy: the upload is the update clipped to clip_norm plus the round's
// Gaussian noise; the site accounts its release, keeps the count across restarts, and uploads
// nothing once another release would pass its epsilon budget.
TEST_F(LearnerFederationTest, LocalPrivacyClipsAndNoisesUploadsAndStopsAtTheBudget) {
  auto agg = cloud::Aggregator::Start(Cloud(1));
  ASSERT_TRUE(agg.ok()) << agg.status();
  const std::vector<float> theta0 = (*agg)->GetLink("m->oracle")->params;
  LearningOptions lo = Learning("site-a", (*agg)->port());
  dp::PrivacyOptions& p = lo.federation.links[0].privacy;
  p.clip_norm = 0.01;
  p.noise_multiplier = 1.0;
  p.delta = 1e-5;
  p.seed = 99;
  const double eps1 = dp::GaussianEpsilon(1.0, 1, 1e-5).epsilon;  // 5.2985...
  p.epsilon_budget = eps1;                                          // exactly one release
  {
    auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), lo);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ((*a)->stats().dp_epsilon.at("m->oracle"), 0.0);
    EXPECT_FALSE((*a)->stats().dp_budget_spent.at("m->oracle"));
    Feed(a->get(), 1, 300, 200, 1);
    ASSERT_TRUE(WaitFor([&] { return (*a)->stats().rounds_joined >= 1 && (*agg)->GetLink("m->oracle")->round >= 1; }, 60));
    const auto st = (*a)->stats();
    EXPECT_EQ(st.updates_sent, 1);
    EXPECT_DOUBLE_EQ(st.dp_epsilon.at("m->oracle"), eps1);
    EXPECT_TRUE(st.dp_budget_spent.at("m->oracle"));
    // Theta_1 = Theta_0 + clip(delta) + noise: taking the round-0 noise away leaves norm 0.01.
    auto g = (*agg)->GetLink("m->oracle");
    ASSERT_TRUE(g.ok());
    EXPECT_EQ(g->round, 1u);
    std::vector<double> noise(theta0.size(), 0.0);
    dp::GaussianNoise::ForRound(99, 0).Add(&noise, 1.0 * 0.01);
    double sq = 0, moved = 0;
    for (std::size_t i = 0; i < theta0.size(); ++i) {
      const double d = static_cast<double>(g->params[i]) - static_cast<double>(theta0[i]);
      moved += d * d;
      sq += (d - noise[i]) * (d - noise[i]);
    }
    EXPECT_NEAR(std::sqrt(sq), 0.01, 1e-4);
    EXPECT_GT(std::sqrt(moved), 0.02);  // the noise (std 0.01 on each of 76 values) dominates
  }
  // Restarted, the site still counts its release: the budget stays spent.
  auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), lo);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_DOUBLE_EQ((*a)->stats().dp_epsilon.at("m->oracle"), eps1);
  EXPECT_TRUE((*a)->stats().dp_budget_spent.at("m->oracle"));
}

// The label intake over HTTP: CSV in, 202 out; a bad body is a 400 naming the line.
std::pair<int, std::string> Post(uint16_t port, const std::string& target, const std::string& body) {
  namespace http = boost::beast::http;
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::resolver resolver(ioc);
  boost::beast::tcp_stream stream(ioc);
  stream.connect(resolver.resolve("127.0.0.1", std::to_string(port)));
  http::request<http::string_body> req{body.empty() ? http::verb::get : http::verb::post, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::content_type, "text/csv");
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req);
  boost::beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(stream, buf, res);
  return {res.result_int(), res.body()};
}

TEST_F(LearnerFederationTest, HttpLabelIntake) {
  auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), Learning("site-a", 0));
  ASSERT_TRUE(a.ok()) << a.status();
  for (int f = 0; f < 10; ++f) (*a)->Submit(f, f * 0.1, {Vec({0.7f, 0.1f, 0.1f, 0.1f})}, {true}, false);
  ASSERT_TRUE((*a)->WaitIdle(10));
  const uint16_t port = (*a)->http_port();
  ASSERT_GT(port, 0);
  auto ok = Post(port, "/labels", "frame,label\n1,0\n2,3\nt=0.5,1\n");
  EXPECT_EQ(ok.first, 202) << ok.second;
  auto bad = Post(port, "/labels", "1,0\n2,9\n");
  EXPECT_EQ(bad.first, 400);
  EXPECT_NE(bad.second.find("line 2"), std::string::npos) << bad.second;
  ASSERT_TRUE((*a)->WaitIdle(10));
  EXPECT_EQ((*a)->stats().labels, 3);
  auto health = Post(port, "/healthz", "");
  EXPECT_EQ(health.first, 200);
  EXPECT_NE(health.second.find("\"labels\":3"), std::string::npos) << health.second;
}

// The operator's command: `mlink-edge label import FILE --config site.yaml` stores what matches,
// names what does not, and refuses a malformed file (exit 2) without storing any of it.
TEST(LabelImportCommand, StoresMatchingLabelsAndRejectsBadFiles) {
  const std::string dir = mlink::testing::TempDir("label-import");
  std::filesystem::create_directories(dir + "/data");
  {
    std::vector<ModelInfo> models = {VecModel("motion", 1, link::TaskKind::kRegression)};
    auto store = SampleStore::Open(dir + "/data/samples.db");
    ASSERT_TRUE(store.ok()) << store.status();
    for (int f = 0; f < 10; ++f) ASSERT_TRUE((*store)->Add(models, f, f * 0.1, {Vec({0.5f})}, {true}, false).ok());
  }
  std::ofstream(dir + "/site.yaml") << "site: s\ndata_dir: data\nmodels:\n  - {name: motion, kind: mog2}\n"
                                       "oracle: {model: motion, task: regression, dim: 1}\n";
  std::ofstream(dir + "/good.csv") << "frame,label\n1,0.5\nt=0.3,0.25\n42,1\n";
  std::ofstream(dir + "/bad.csv") << "frame,label\n2,0.5\n3,oops\n";
  auto run = [&](const std::string& file, const std::string& out) {
    const std::string cmd = std::string(MLINK_EDGE_BIN) + " label import " + dir + "/" + file + " --config " + dir +
                            "/site.yaml > " + dir + "/" + out + " 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(dir + "/" + out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return std::make_pair(WEXITSTATUS(rc), text);
  };
  auto good = run("good.csv", "good.txt");
  EXPECT_EQ(good.first, 0) << good.second;
  EXPECT_NE(good.second.find("stored 2 of 3 labels"), std::string::npos) << good.second;
  EXPECT_NE(good.second.find("frame 42"), std::string::npos) << good.second;
  auto bad = run("bad.csv", "bad.txt");
  EXPECT_EQ(bad.first, 2) << bad.second;
  EXPECT_NE(bad.second.find("line 3"), std::string::npos) << bad.second;
  auto store = SampleStore::Open(dir + "/data/samples.db");
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->LabelCount(), 2);  // nothing of the bad file was stored
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mlink::edge
