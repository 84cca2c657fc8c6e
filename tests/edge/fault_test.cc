// Fault tests of a site's learner: a network cut between it and the aggregator (a proxy on
// loopback that the test controls), corrupt state files, and a data folder whose files cannot
// grow (a full disk). Real SQLite files, real TLS sockets; each test's comment states what must
// hold afterwards.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "../support/cloud_process.h"
#include "../support/fed_support.h"
#include "../support/site_support.h"
#include "../support/tcp_proxy.h"
#include "mlink/cloud/aggregator.h"
#include "mlink/common/sqlite.h"
#include "mlink/edge/learner.h"
#include "mlink/edge/sample_store.h"

namespace mlink::edge {
namespace {

using mlink::testing::OracleSpec;
using mlink::testing::TcpProxy;
using mlink::testing::TestEdge;

ModelInfo VecModel(const std::string& name, int dim) {
  ModelInfo m;
  m.name = name;
  m.kind = "test";
  m.format = link::OutputFormat::Vector(dim);
  m.task = link::TaskKind::kSingleLabel;
  return m;
}

std::vector<ModelInfo> OneModel() { return {VecModel("m", 4)}; }

bool WaitFor(const std::function<bool()>& ok, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return ok();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Frames first..first+frames-1 of model "m", whose class probabilities put the true class's mass
// on (c + 1) % 4, and a label for each of the first `labels` of them.
void Feed(Learner* l, int frames, int labels, uint64_t seed, int first = 0) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> cls(0, 3);
  std::vector<Label> lab;
  for (int f = 0; f < frames; ++f) {
    const int c = cls(rng);
    ModelOutput out;
    out.vec.assign(4, 0.05f);
    out.vec[(c + 1) % 4] = 0.85f;
    l->Submit(first + f, (first + f) * 0.1, {out}, {true}, true);
    if (f < labels) {
      std::vector<float> one(4, 0.f);
      one[c] = 1;
      lab.push_back({first + f, -1, one});
    }
  }
  if (!lab.empty()) l->SubmitLabels(lab);
}

class EdgeFaultTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(mlink::testing::NewSuiteCerts(&certs_, "edge-fault-certs", "site-a site-b"));
  }
  static void TearDownTestSuite() { mlink::testing::DeleteSuiteDir(&certs_); }
  void SetUp() override { dir_ = mlink::testing::TestDir("edge-fault-"); }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  cloud::CloudOptions Cloud(int min_edges) {
    return mlink::testing::OracleCloud(*certs_, dir_ + "/cloud", min_edges);
  }

  LearningOptions Learning(const std::string& site, uint16_t port) {
    LearningOptions o = mlink::testing::OracleLearning(*certs_, site, port);
    o.federation.idle_timeout_s = 1.0;
    return o;
  }

  // The first column of the first row of a query on site-a's federation.db; -1 if no row.
  int64_t Count(const std::string& sql) {
    auto db = sql::Database::Open(dir_ + "/a/federation.db");
    if (!db.ok()) return -1;
    auto q = (*db)->Prepare(sql);
    if (!q.ok()) return -1;
    auto row = q->Step();
    if (!row.ok() || !*row) return -1;
    return q->ColumnInt(0);
  }

  static std::string* certs_;
  std::string dir_;
};
std::string* EdgeFaultTest::certs_ = nullptr;

// The network between site-a's learner and the aggregator is cut after the site joined round 0:
// the proxy drops everything the aggregator sends (an update the site sends still arrives and is
// stored, but its Ack is lost), and new connections cannot complete their TLS handshake. Must
// hold afterwards: the site notices within its idle timeout (pings unanswered), keeps the update
// in federation.db while cut off, keeps retrying with backoff, and once the network is back
// re-sends the kept update, which the aggregator refuses as a duplicate if it had arrived or
// accepts if not: it counts exactly once, the kept copy is deleted, and the round closes with the
// exact mean of the two sites' deltas.
TEST_F(EdgeFaultTest, NetworkCutKeepsTheUpdateOnDiskAndItLandsExactlyOnce) {
  auto agg = cloud::Aggregator::Start(Cloud(2));
  ASSERT_TRUE(agg.ok()) << agg.status();
  const std::vector<float> theta = (*agg)->GetLink("m->oracle")->params;
  TcpProxy proxy((*agg)->port());
  LearningOptions learning = Learning("site-a", proxy.port());
  learning.federation.idle_timeout_s = 4;  // longer than the local update takes, on a quiet machine
  auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), learning);
  ASSERT_TRUE(a.ok()) << a.status();
  // Joined: the round-0 global link is stored. No labels yet, so no update.
  ASSERT_TRUE(WaitFor([&] { return Count("SELECT round FROM globals") == 0; }, 20));
  ASSERT_TRUE((*a)->stats().connected);

  proxy.SetMode(TcpProxy::Mode::kDropDown);
  const int accepted_before_cut = proxy.accepted();
  Feed(a->get(), 300, 200, 1);
  ASSERT_TRUE(
      WaitFor([&] { return Count("SELECT count(*) FROM pending WHERE round = 0") == 1; }, 60))
      << "the update is computed and kept on disk";
  ASSERT_TRUE(WaitFor([&] { return !(*a)->stats().connected; }, 15)) << "the site notices the cut";
  // The update was sent if the site still counted itself connected when it was computed
  // (training is quicker than the idle timeout on a quiet machine, not always under load).
  ASSERT_TRUE(WaitFor(
      [&] { return (*agg)->MetricsText().find("mlink_connected_edges 0\n") != std::string::npos; },
      10));
  const bool arrived = (*agg)->GetLink("m->oracle")->pending_updates == 1;
  std::printf("the update %s the aggregator before the cut was noticed\n",
              arrived ? "reached" : "did not reach");
  EXPECT_EQ(Count("SELECT count(*) FROM pending WHERE round = 0"), 1)
      << "kept on disk: no Ack came";
  std::vector<float> delta_a;
  {
    auto db = sql::Database::Open(dir_ + "/a/federation.db");
    ASSERT_TRUE(db.ok());
    auto q = (*db)->Prepare("SELECT delta FROM pending");
    ASSERT_TRUE(q.ok() && *q->Step());
    auto blob = q->ColumnBlob(0);
    delta_a.resize(blob.size() / sizeof(float));
    std::memcpy(delta_a.data(), blob.data(), blob.size());
  }
  ASSERT_EQ(delta_a.size(), theta.size());
  ASSERT_TRUE(WaitFor([&] { return proxy.accepted() >= accepted_before_cut + 1; }, 20))
      << "it tries to reconnect";
  EXPECT_EQ((*a)->stats().rounds_joined, 0);
  EXPECT_EQ(Count("SELECT count(*) FROM pending WHERE round = 0"), 1);

  // The network is back; connections that lost bytes are dead.
  proxy.SetMode(TcpProxy::Mode::kForward);
  proxy.CloseAll();
  ASSERT_TRUE(WaitFor([&] { return Count("SELECT count(*) FROM pending") == 0; }, 30))
      << "re-sent, refused as a duplicate, and forgotten";
  EXPECT_TRUE((*a)->stats().connected);
  EXPECT_EQ((*a)->stats().updates_rejected, 0) << "a duplicate is not a rejection";
  auto link = (*agg)->GetLink("m->oracle");
  EXPECT_EQ(link->pending_updates, 1u) << "counted once";
  const std::string metrics = (*agg)->MetricsText();
  EXPECT_NE(metrics.find("mlink_updates_accepted_total{link=\"m->oracle\"} 1\n"), std::string::npos)
      << metrics;
  EXPECT_EQ(
      metrics.find("mlink_updates_rejected_total{reason=\"duplicate\"} 1\n") != std::string::npos,
      arrived)
      << "re-sent after the cut: a duplicate if it had arrived, else accepted now\n"
      << metrics;

  // The round closes with site-b's update: exactly the mean of the two deltas.
  auto b = TestEdge::Connect(*certs_, "site-b", (*agg)->port());
  ASSERT_TRUE(b);
  protocol::Hello h;
  h.protocol_version = protocol::kProtocolVersion;
  h.links.push_back({"m->oracle", OracleSpec().Hash()});
  ASSERT_TRUE(b->client().Send(h).ok());
  ASSERT_TRUE(b->Next<protocol::Welcome>());
  ASSERT_TRUE(b->Next<protocol::GlobalLink>());
  std::vector<float> delta_b(theta.size());
  for (std::size_t i = 0; i < delta_b.size(); ++i)
    delta_b[i] = 0.125f * static_cast<float>(static_cast<int>(i % 7) - 3);
  ASSERT_TRUE(b->client().Send(mlink::testing::UpdateFor("m->oracle", delta_b, 0)).ok());
  auto ack = b->Next<protocol::Ack>();
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->received, 2u);
  auto g = b->Next<protocol::GlobalLink>();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->round, 1u);
  std::vector<float> expected(theta.size());
  for (std::size_t i = 0; i < theta.size(); ++i) {
    expected[i] = static_cast<float>(
        static_cast<double>(theta[i]) +
        (static_cast<double>(delta_a[i]) + static_cast<double>(delta_b[i])) / 2.0);
  }
  EXPECT_EQ(g->params, expected);
  EXPECT_TRUE(WaitFor([&] { return Count("SELECT round FROM globals") == 1; }, 20))
      << "site-a goes on to round 1";
}

// samples.db or federation.db is corrupt when a site starts. Must hold: Learner::Start (what
// mlink-edge runs at start-up) fails with kDataLoss and an error that names the file; the file is
// left byte for byte as it was; the other, intact file is untouched too.
TEST_F(EdgeFaultTest, CorruptSiteDatabasesAreClearErrorsAndAreNotOverwritten) {
  const std::string samples = dir_ + "/a/samples.db", fed = dir_ + "/a/federation.db";
  {
    auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), Learning("site-a", 0));
    ASSERT_TRUE(a.ok()) << a.status();
    Feed(a->get(), 200, 0, 2);
    ASSERT_TRUE(WaitFor([&] { return (*a)->stats().recorded == 200; }, 30));
  }
  const std::string good_samples = ReadAll(samples), good_fed = ReadAll(fed);
  ASSERT_GE(good_samples.size(), 3 * 4096u);
  ASSERT_GE(good_fed.size(), 2 * 4096u);

  struct Case {
    std::string what, file, good, bad;
  };
  std::vector<Case> cases = {
      {"samples.db header", samples, good_samples, std::string(16, 'X') + good_samples.substr(16)},
      {"samples.db page", samples, good_samples,
       good_samples.substr(0, 4096) + std::string(4096, '\xA5') + good_samples.substr(8192)},
      {"federation.db header", fed, good_fed, std::string(16, 'X') + good_fed.substr(16)},
      {"federation.db page", fed, good_fed,
       good_fed.substr(0, 4096) + std::string(4096, '\xA5') + good_fed.substr(8192)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    std::ofstream(c.file, std::ios::binary | std::ios::trunc) << c.bad;
    auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), Learning("site-a", 0));
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.status().code(), StatusCode::kDataLoss) << a.status();
    EXPECT_NE(a.status().message().find(c.file), std::string::npos) << a.status();
    EXPECT_NE(a.status().message().find("It is left as it is"), std::string::npos) << a.status();
    EXPECT_TRUE(ReadAll(c.file) == c.bad) << "the corrupt file is kept as it was";
    EXPECT_TRUE(ReadAll(samples == c.file ? fed : samples) ==
                (samples == c.file ? good_fed : good_samples));
    std::ofstream(c.file, std::ios::binary | std::ios::trunc) << c.good;
  }
  auto store = SampleStore::Open(samples);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->SampledCount(), 200) << "restored, the intact file still holds every sample";
}

// The site's data folder cannot grow (RLIMIT_FSIZE in a child process: what a full disk does to
// SQLite, and it works as root, where a read-only chmod would not). Must hold: the site keeps
// taking frames and stops cleanly (exit 0, no crash), every failed write is logged with the file
// it could not write, and what was stored before the disk filled is intact afterwards (the file
// passes SQLite's integrity check and holds every sample the site counted as recorded).
TEST_F(EdgeFaultTest, FullDiskIsLoggedWithTheFileAndLosesNothingStored) {
  const std::string data = dir_ + "/a";
  {  // a store with some samples, and its files at their steady size
    auto a = Learner::Start("site-a", data, OneModel(), Learning("site-a", 0));
    ASSERT_TRUE(a.ok()) << a.status();
    Feed(a->get(), 100, 0, 3);
    ASSERT_TRUE(WaitFor([&] { return (*a)->stats().recorded == 100; }, 30));
  }
  int err_pipe[2], out_pipe[2];
  ASSERT_EQ(pipe(err_pipe), 0);
  ASSERT_EQ(pipe(out_pipe), 0);
  std::fflush(nullptr);
  pid_t child = fork();
  if (child == 0) {
    // The child: no gtest, results through the pipes. Files may not grow past 64 KiB from here.
    dup2(err_pipe[1], 2);
    close(err_pipe[0]);
    close(out_pipe[0]);
    signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails with EFBIG instead of killing us
    rlimit lim{64 << 10, 64 << 10};
    setrlimit(RLIMIT_FSIZE, &lim);
    auto a = Learner::Start("site-a", data, OneModel(), Learning("site-a", 0));
    if (!a.ok()) {
      std::fprintf(stderr, "start failed: %s\n", a.status().message().c_str());
      _exit(3);
    }
    Feed(a->get(), 2000, 0, 4, /*first=*/100);
    (*a)->WaitIdle(60);
    const long long recorded = (*a)->stats().recorded;
    (*a)->Stop();
    (void)!write(out_pipe[1], &recorded, sizeof(recorded));
    _exit(0);
  }
  close(err_pipe[1]);
  close(out_pipe[1]);
  std::string log;
  char buf[4096];
  ssize_t n;
  while ((n = read(err_pipe[0], buf, sizeof(buf))) > 0)
    log.append(buf, static_cast<std::size_t>(n));
  long long recorded = -1;
  ASSERT_EQ(read(out_pipe[0], &recorded, sizeof(recorded)), static_cast<ssize_t>(sizeof(recorded)))
      << log.substr(0, 3000);
  close(err_pipe[0]);
  close(out_pipe[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "the site did not crash";
  EXPECT_EQ(WEXITSTATUS(status), 0) << log.substr(0, 3000);
  std::printf("frames recorded with the disk full: %lld of 2000\n", recorded);
  EXPECT_LT(recorded, 2000) << "the limit did stop writes";
  const auto first_error = log.find("sample store write failed");
  ASSERT_NE(first_error, std::string::npos) << log.substr(0, 3000);
  const std::string line = log.substr(first_error, log.find('\n', first_error) - first_error);
  EXPECT_NE(line.find(data + "/samples.db"), std::string::npos)
      << "the error names the file: " << line;

  auto store = SampleStore::Open(data + "/samples.db");  // runs PRAGMA quick_check
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->SampledCount(), 100 + recorded) << "every frame counted as recorded is there";
}

// The aggregator's disk fills while site-a uploads (RLIMIT_FSIZE on the real mlink-cloud process,
// lifted later with prlimit: space freed). Must hold: the aggregator logs the failed commit with
// the file it could not write and refuses the update with reason "internal", acknowledging
// nothing; the site keeps the update in federation.db and sends it again until it is stored;
// then it is acknowledged once, the round closes with it, and the round history has it once.
TEST_F(EdgeFaultTest, AggregatorDiskFullKeepsTheUpdateOnTheSiteUntilItIsStored) {
  const std::string config = dir_ + "/cloud.yaml";
  std::ofstream(config)
      << "server: {listen: 127.0.0.1, port: 0, http_port: 0}\n"
      << "tls: {ca: " << *certs_ << "/ca.pem, cert: " << *certs_ << "/cloud.pem, key: " << *certs_
      << "/cloud.key}\n"
      << "data_dir: " << dir_ << "/cloud\n"
      << "links:\n  - id: m->oracle\n"
      << "    spec: {source: {kind: vector, dim: 4}, target: {kind: vector, dim: 4}, task: "
         "single_label}\n"
      << "    init_seed: 3\n    round: {min_edges: 1, quorum: 1, deadline_s: 60}\n";
  mlink::testing::CloudProcess cloud(MLINK_CLOUD_BIN, config, dir_ + "/cloud.log", [] {
    signal(SIGXFSZ, SIG_IGN);
  });  // a write past the limit fails with EFBIG
  const uint16_t port = cloud.WaitPort();
  ASSERT_NE(port, 0) << cloud.Log();
  // From now on no file of the aggregator may grow: the next commit cannot extend the WAL.
  const std::string db = dir_ + "/cloud/aggregator.db";
  const auto wal = std::filesystem::file_size(db + "-wal");
  rlimit full{static_cast<rlim_t>(std::max<uintmax_t>(wal, std::filesystem::file_size(db))),
              RLIM_INFINITY};
  ASSERT_EQ(prlimit(cloud.pid(), RLIMIT_FSIZE, &full, nullptr), 0);

  auto a = Learner::Start("site-a", dir_ + "/a", OneModel(), Learning("site-a", port));
  ASSERT_TRUE(a.ok()) << a.status();
  Feed(a->get(), 300, 200, 5);
  auto count = [&](const std::string& text) {
    std::string log = cloud.Log();
    int n = 0;
    for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
    return n;
  };
  ASSERT_TRUE(WaitFor([&] { return count("cannot store updates") >= 2; }, 60))
      << "refused, sent again, refused\n"
      << cloud.Log();
  const std::string log = cloud.Log();
  const auto at = log.find("cannot store updates");
  const std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_NE(line.find(db), std::string::npos) << "the error names the file: " << line;
  EXPECT_EQ(Count("SELECT count(*) FROM pending WHERE round = 0"), 1) << "kept on the site";
  EXPECT_EQ((*a)->stats().rounds_joined, 0);

  rlimit freed{RLIM_INFINITY, RLIM_INFINITY};
  ASSERT_EQ(prlimit(cloud.pid(), RLIMIT_FSIZE, &freed, nullptr), 0);
  // Stored and acknowledged; with min_edges 1 every update closes a round, so the site goes on.
  ASSERT_TRUE(WaitFor([&] { return (*a)->stats().rounds_joined >= 1; }, 30)) << cloud.Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return Count("SELECT count(*) FROM pending WHERE round = 0") == 0 &&
               Count("SELECT round FROM globals") >= 1;
      },
      30));
  EXPECT_EQ((*a)->stats().updates_rejected, 0)
      << "a storage failure is not a verdict on the update";
  a->reset();
  cloud.Kill(SIGTERM);
  auto h = sql::Database::Open(db);
  ASSERT_TRUE(h.ok()) << h.status();
  auto q = (*h)->Prepare("SELECT count(*), sum(updates) FROM rounds WHERE round = 0");
  ASSERT_TRUE(q.ok() && *q->Step());
  EXPECT_EQ(q->ColumnInt(0), 1);
  EXPECT_EQ(q->ColumnInt(1), 1) << "round 0 closed once, with the one update";
}

}  // namespace
}  // namespace mlink::edge
