// Fault tests of the aggregator: the real mlink-cloud binary killed with SIGKILL while many
// edges upload, an edge whose connection dies half-way through a frame, corrupt state files, and
// a load of many edges over mutual TLS on loopback with a client that never reads and one that
// floods. Real processes, sockets, TLS and SQLite files throughout; each test's comment states
// what must hold afterwards.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "../support/cloud_process.h"
#include "../support/cloud_support.h"
#include "../support/edge_certs.h"
#include "../support/fed_support.h"
#include "../support/tcp_proxy.h"
#include "mlink/cloud/aggregator.h"
#include "mlink/common/sqlite.h"
#include "mlink/link/link.h"

namespace mlink::cloud {
namespace {

using mlink::testing::CloudProcess;
using mlink::testing::FreePort;
using mlink::testing::HttpGet;
using mlink::testing::Metric;
using mlink::testing::SmallSpec;
using mlink::testing::TcpProxy;
using mlink::testing::TestEdge;
using mlink::testing::UpdateFor;
using protocol::RejectReason;

// vec2vec 1000 -> 50: 105,150 parameters, a 420 KB update.
link::LinkSpec BigSpec() {
  return mlink::testing::VectorSpec(1000, 50, link::TaskKind::kRegression);
}

const char kSmallYaml[] =
    "{source: {kind: vector, dim: 3}, target: {kind: vector, dim: 2}, task: single_label}";
const char kBigYaml[] =
    "{source: {kind: vector, dim: 1000}, target: {kind: vector, dim: 50}, task: regression}";

std::vector<float> Initial(const link::LinkSpec& spec, uint64_t seed) {
  return (*link::Link::Create(spec, seed))->GetParams().data;
}

// Deltas whose sums are exact in double precision, so the expected average is exact.
std::vector<float> Delta(int k, std::size_t n) {
  std::vector<float> d(n);
  for (std::size_t i = 0; i < n; ++i)
    d[i] = 0.25f * static_cast<float>((k + 1) * (static_cast<int>(i % 5) - 2));
  return d;
}

// Theta + mean of the deltas, computed as the aggregator does (double sums, one rounding).
std::vector<float> Mean(const std::vector<float>& theta,
                        const std::vector<std::vector<float>>& deltas) {
  std::vector<float> out(theta.size());
  for (std::size_t i = 0; i < theta.size(); ++i) {
    double s = 0;
    for (const auto& d : deltas) s += d[i];
    out[i] =
        static_cast<float>(static_cast<double>(theta[i]) + s / static_cast<double>(deltas.size()));
  }
  return out;
}

protocol::Hello HelloFor(std::vector<std::pair<std::string, uint64_t>> links) {
  protocol::Hello h;
  h.protocol_version = protocol::kProtocolVersion;
  for (auto& [id, hash] : links) h.links.push_back({id, hash});
  return h;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class CloudFaultTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(mlink::testing::NewSuiteCerts(&certs_, "fault-certs",
                                              "site-a site-b site-c late slow flood"));
    ASSERT_TRUE(mlink::testing::IssueEdgeCerts(*certs_, "e", 24));
  }
  static void TearDownTestSuite() { mlink::testing::DeleteSuiteDir(&certs_); }
  void SetUp() override { dir_ = mlink::testing::TestDir("fault-"); }
  void TearDown() override {
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  // A config for the real binary: link l1 (small) and optionally big, both "mean".
  std::string WriteConfig(int min_edges, const std::string& server_extra = "", bool big = false,
                          uint16_t http_port = 0) {
    std::string path = dir_ + "/cloud.yaml";
    std::ofstream out(path);
    out << "server: {listen: 127.0.0.1, port: 0, http_port: " << http_port << server_extra << "}\n"
        << "tls: {ca: " << *certs_ << "/ca.pem, cert: " << *certs_ << "/cloud.pem, key: " << *certs_
        << "/cloud.key}\n"
        << "data_dir: " << dir_ << "/state\n"
        << "links:\n  - id: l1\n    spec: " << kSmallYaml << "\n"
        << "    init_seed: 7\n    round: {min_edges: " << min_edges << ", quorum: " << min_edges
        << ", deadline_s: 60}\n";
    if (big) {
      out << "  - id: big\n    spec: " << kBigYaml << "\n    init_seed: 3\n"
          << "    round: {min_edges: 100000, quorum: 100000, deadline_s: 600}\n";
    }
    return path;
  }

  CloudOptions InProcess(const link::LinkSpec& spec, int min_edges) {
    CloudOptions o = mlink::testing::CloudOptionsFor(*certs_, dir_ + "/state");
    o.links.push_back(mlink::testing::LinkFor("l1", spec, 3, min_edges, min_edges, 60));
    return o;
  }

  // Connects (directly, or to `port` of a proxy), says Hello for l1 and takes Welcome and the
  // global link of `round`.
  std::unique_ptr<TestEdge> Join(const std::string& name, uint16_t port, uint64_t round,
                                 const link::LinkSpec& spec = SmallSpec()) {
    Status err;
    auto e = TestEdge::Connect(*certs_, name, port, &err);
    EXPECT_TRUE(e) << name << ": " << err;
    if (!e) return nullptr;
    EXPECT_TRUE(e->client().Send(HelloFor({{"l1", spec.Hash()}})).ok());
    auto w = e->Next<protocol::Welcome>();
    EXPECT_TRUE(w && w->accepted.size() == 1) << name;
    auto g = e->Next<protocol::GlobalLink>();
    EXPECT_TRUE(g && g->round == round) << name << " expected round " << round;
    return e;
  }

  static std::string* certs_;
  std::string dir_;
};
std::string* CloudFaultTest::certs_ = nullptr;

// mlink-cloud is killed with SIGKILL while 24 edges upload (once a third of them are
// acknowledged), and restarted. Must hold afterwards: every acknowledged update is in
// aggregator.db and in the reloaded round (re-sending it is refused as a duplicate); the updates
// that were in flight are either stored (duplicate on re-send) or accepted on re-send, never
// counted twice; the round closes with exactly the mean of all 25 deltas; the edges go on to
// the next round, whose result is exact too; and each round appears once in the round history.
TEST_F(CloudFaultTest, AggregatorKilledUnderLoadLosesNoAcknowledgedUpdateAndCountsNoRoundTwice) {
  constexpr int kEdges = 24;
  const std::string config =
      WriteConfig(kEdges + 1);  // + "late": the round cannot close before the kill
  const std::vector<float> theta0 = Initial(SmallSpec(), 7);
  std::vector<std::vector<float>> d0;
  for (int k = 0; k <= kEdges; ++k) d0.push_back(Delta(k, theta0.size()));
  auto name = [](int k) { return "e" + std::to_string(k); };

  std::set<std::string> acked;
  {
    CloudProcess cloud(MLINK_CLOUD_BIN, config, dir_ + "/cloud1.log");
    const uint16_t port = cloud.WaitPort();
    ASSERT_NE(port, 0) << cloud.Log();
    std::vector<std::unique_ptr<TestEdge>> edges;
    for (int k = 0; k < kEdges; ++k) {
      edges.push_back(Join(name(k), port, 0));
      ASSERT_TRUE(edges.back());
    }
    // The edges upload one after another, 2 ms apart; the aggregator is killed once a third of
    // them are acknowledged: some acknowledged, some committed or in flight, some not sent yet.
    std::thread sender([&] {
      for (int k = 0; k < kEdges; ++k) {
        (void)edges[k]->client().Send(UpdateFor("l1", d0[k], 0));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
    for (int spin = 0; spin < 20000; ++spin) {
      int acks = 0;
      for (auto& e : edges) acks += e->pending() > 0;
      if (acks >= kEdges / 3) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    cloud.Kill(SIGKILL);
    sender.join();
    for (int k = 0; k < kEdges; ++k) {
      while (edges[k]->pending() > 0) {
        if (edges[k]->Next<protocol::Ack>(1)) acked.insert(name(k));
      }
    }
  }
  ASSERT_FALSE(acked.empty());
  std::printf("acknowledged before the kill: %zu of %d\n", acked.size(), kEdges);

  // On disk: every acknowledged update is stored for round 0.
  std::set<std::string> stored;
  {
    auto db = sql::Database::Open(dir_ + "/state/aggregator.db");
    ASSERT_TRUE(db.ok()) << db.status();
    auto q = (*db)->Prepare("SELECT edge FROM updates WHERE link = 'l1' AND round = 0");
    ASSERT_TRUE(q.ok());
    while (*q->Step()) stored.insert(q->ColumnText(0));
  }
  for (const auto& e : acked)
    EXPECT_TRUE(stored.count(e)) << e << " was acknowledged but is not stored";

  CloudProcess cloud(MLINK_CLOUD_BIN, config, dir_ + "/cloud2.log");
  const uint16_t port = cloud.WaitPort();
  ASSERT_NE(port, 0) << cloud.Log();
  EXPECT_NE(cloud.Log().find("recovered_updates=" + std::to_string(stored.size()) + "\n"),
            std::string::npos)
      << cloud.Log();
  // Every edge reconnects and re-sends its update (what an edge does with an update it kept).
  std::vector<std::unique_ptr<TestEdge>> edges;
  for (int k = 0; k < kEdges; ++k) {
    edges.push_back(Join(name(k), port, 0));
    ASSERT_TRUE(edges.back());
    ASSERT_TRUE(edges[k]->client().Send(UpdateFor("l1", d0[k], 0)).ok());
  }
  for (int k = 0; k < kEdges; ++k) {
    if (stored.count(name(k))) {
      auto r = edges[k]->Next<protocol::Reject>();
      ASSERT_TRUE(r) << name(k);
      EXPECT_EQ(r->reason, RejectReason::kDuplicate) << name(k);
    } else {
      EXPECT_TRUE(edges[k]->Next<protocol::Ack>())
          << name(k) << " was not stored: its re-sent update is accepted";
    }
  }
  auto late = Join("late", port, 0);
  ASSERT_TRUE(late);
  ASSERT_TRUE(late->client().Send(UpdateFor("l1", d0[kEdges], 0)).ok());
  auto late_ack = late->Next<protocol::Ack>();
  ASSERT_TRUE(late_ack);
  EXPECT_EQ(late_ack->received, static_cast<uint32_t>(kEdges + 1));
  const std::vector<float> theta1 = Mean(theta0, d0);
  edges.push_back(std::move(late));
  for (auto& e : edges) {
    auto g = e->Next<protocol::GlobalLink>();
    ASSERT_TRUE(g);
    EXPECT_EQ(g->round, 1u);
    EXPECT_EQ(g->params, theta1) << "Theta_1 = Theta_0 + mean of all 25 deltas, each counted once";
  }

  // The edges resume: round 1 closes exactly too.
  std::vector<std::vector<float>> d1;
  for (int k = 0; k <= kEdges; ++k) d1.push_back(Delta(kEdges - k, theta1.size()));
  for (int k = 0; k <= kEdges; ++k)
    ASSERT_TRUE(edges[k]->client().Send(UpdateFor("l1", d1[k], 1)).ok());
  for (auto& e : edges) ASSERT_TRUE(e->Next<protocol::Ack>());
  const std::vector<float> theta2 = Mean(theta1, d1);
  for (auto& e : edges) {
    auto g = e->Next<protocol::GlobalLink>();
    ASSERT_TRUE(g);
    EXPECT_EQ(g->round, 2u);
    EXPECT_EQ(g->params, theta2);
  }
  edges.clear();
  cloud.Kill(SIGTERM);

  auto db = sql::Database::Open(dir_ + "/state/aggregator.db");
  ASSERT_TRUE(db.ok()) << db.status();
  auto q = (*db)->Prepare(
      "SELECT round, count(*), max(updates) FROM rounds WHERE link = 'l1' GROUP BY round ORDER BY "
      "round");
  ASSERT_TRUE(q.ok());
  std::vector<std::vector<int64_t>> history;
  while (*q->Step()) history.push_back({q->ColumnInt(0), q->ColumnInt(1), q->ColumnInt(2)});
  EXPECT_EQ(history, (std::vector<std::vector<int64_t>>{{0, 1, kEdges + 1}, {1, 1, kEdges + 1}}))
      << "each round closed once, with every edge's update";
  auto left = (*db)->Prepare("SELECT count(*) FROM updates");
  ASSERT_TRUE(left.ok() && *left->Step());
  EXPECT_EQ(left->ColumnInt(0), 0) << "folded updates are removed with their round's close";
}

// An edge's connection dies after 100 KB of its 420 KB update (the proxy closes both sides:
// what a killed process or a pulled cable leaves). Must hold afterwards: the partial frame is
// discarded (nothing stored, its read-budget charge returned), the other edges' updates are
// acknowledged meanwhile, and the edge, reconnected, re-sends the whole update, which counts
// once in an exact round.
TEST_F(CloudFaultTest, EdgeCutMidUploadLeavesTheRoundUnaffected) {
  const link::LinkSpec spec = BigSpec();
  auto agg = Aggregator::Start(InProcess(spec, 3));
  ASSERT_TRUE(agg.ok()) << agg.status();
  const uint16_t port = (*agg)->port();
  const std::vector<float> theta = Initial(spec, 3);
  std::vector<std::vector<float>> d = {Delta(0, theta.size()), Delta(1, theta.size()),
                                       Delta(2, theta.size())};

  TcpProxy proxy(port);
  auto a = Join("site-a", proxy.port(), 0, spec);
  auto b = Join("site-b", port, 0, spec);
  auto c = Join("site-c", port, 0, spec);
  ASSERT_TRUE(a && b && c);
  proxy.CutUpAfter(100000);
  ASSERT_TRUE(a->client().Send(UpdateFor("l1", d[0], 0)).ok());
  ASSERT_TRUE(a->WaitClosed()) << "the proxy cut the connection";
  // The edge can see the close before the proxy's thread has counted it: wait for the count.
  for (int i = 0; i < 200 && proxy.open_connections() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(proxy.open_connections(), 0);
  EXPECT_GE(proxy.up_bytes(), 100000u);
  EXPECT_LT(proxy.up_bytes(), 200000u);

  // The aggregator notices the lost connection and returns the partial message's charge.
  std::string metrics;
  for (int i = 0; i < 200; ++i) {
    metrics = (*agg)->MetricsText();
    if (metrics.find("mlink_connected_edges 2\n") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_NE(metrics.find("mlink_connected_edges 2\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mlink_read_budget_held_bytes 0\n"), std::string::npos) << metrics;
  EXPECT_EQ((*agg)->GetLink("l1")->pending_updates, 0u) << "nothing of the partial frame is stored";

  ASSERT_TRUE(b->client().Send(UpdateFor("l1", d[1], 0)).ok());
  auto ack_b = b->Next<protocol::Ack>();
  ASSERT_TRUE(ack_b) << "another edge is not stalled by the cut one";
  EXPECT_EQ(ack_b->received, 1u);

  auto a2 = Join("site-a", port, 0, spec);
  ASSERT_TRUE(a2);
  ASSERT_TRUE(a2->client().Send(UpdateFor("l1", d[0], 0)).ok());
  auto ack_a = a2->Next<protocol::Ack>();
  ASSERT_TRUE(ack_a);
  EXPECT_EQ(ack_a->received, 2u);
  ASSERT_TRUE(c->client().Send(UpdateFor("l1", d[2], 0)).ok());
  ASSERT_TRUE(c->Next<protocol::Ack>());
  auto g = b->Next<protocol::GlobalLink>();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->round, 1u);
  EXPECT_EQ(g->params, Mean(theta, d));
  EXPECT_NE((*agg)->MetricsText().find("mlink_updates_accepted_total{link=\"l1\"} 3\n"),
            std::string::npos);
}

// A corrupt aggregator.db at start-up: its header overwritten, a b-tree page overwritten, or
// the file cut to half. Must hold: mlink-cloud exits with status 1 and an error that names the
// file and says it is not a usable database, and the file is left byte for byte as it was
// (never reset, never "repaired").
TEST_F(CloudFaultTest, CorruptAggregatorDatabaseIsAClearErrorAndIsNotOverwritten) {
  {  // a real state file: one stored update, then a clean stop
    auto agg = Aggregator::Start(InProcess(SmallSpec(), 3));
    ASSERT_TRUE(agg.ok()) << agg.status();
    auto a = Join("site-a", (*agg)->port(), 0);
    ASSERT_TRUE(
        a->client().Send(UpdateFor("l1", Delta(0, Initial(SmallSpec(), 3).size()), 0)).ok());
    ASSERT_TRUE(a->Next<protocol::Ack>());
  }
  const std::string db = dir_ + "/state/aggregator.db";
  const std::string good = ReadAll(db);
  ASSERT_GE(good.size(), 4096u * 3);
  std::string config = dir_ + "/cloud.yaml";
  std::ofstream(config) << "server: {listen: 127.0.0.1, port: 0, http_port: 0}\n"
                        << "tls: {ca: " << *certs_ << "/ca.pem, cert: " << *certs_
                        << "/cloud.pem, key: " << *certs_ << "/cloud.key}\n"
                        << "data_dir: " << dir_ << "/state\n"
                        << "links:\n  - id: l1\n    spec: " << kSmallYaml << "\n    init_seed: 3\n";

  std::map<std::string, std::string> damaged;
  damaged["header"] = std::string(16, 'X') + good.substr(16);
  damaged["page"] = good.substr(0, 4096) + std::string(4096, '\xA5') + good.substr(8192);
  damaged["truncated"] = good.substr(0, good.size() / 2 + 100);
  for (const auto& [what, bytes] : damaged) {
    SCOPED_TRACE(what);
    std::filesystem::remove(db + "-wal");
    std::filesystem::remove(db + "-shm");
    std::ofstream(db, std::ios::binary | std::ios::trunc) << bytes;
    CloudProcess cloud(MLINK_CLOUD_BIN, config, dir_ + "/cloud-" + what + ".log");
    EXPECT_EQ(cloud.WaitExit(30), 1) << cloud.Log();
    const std::string log = cloud.Log();
    EXPECT_NE(log.find(db), std::string::npos) << "the error names the file: " << log;
    EXPECT_TRUE(log.find("not a readable SQLite 3 database") != std::string::npos ||
                log.find("integrity check failed") != std::string::npos)
        << log;
    EXPECT_NE(log.find("It is left as it is"), std::string::npos) << log;
    EXPECT_EQ(log.find("aggregator listening"), std::string::npos) << log;
    EXPECT_TRUE(ReadAll(db) == bytes) << "the damaged file is kept as it was";
  }
}

// ------------------------------------------------------------------------------------ load

// An edge of the load test: counts what it receives, on a shared I/O thread.
struct LoadEdge {
  std::unique_ptr<protocol::Client> client;
  std::atomic<int> acks{0}, rejects{0};
  std::atomic<uint64_t> round{UINT64_MAX};
  std::mutex mu;
  std::vector<float> params;  // GUARDED_BY(mu): the last global link
};

// 1,000 edges (one process, shared I/O thread) over mutual TLS on loopback go through 3 rounds
// of the real mlink-cloud while a client that never reads asks for 420 KB global links over and
// over (its socket buffers fill) and a flooder sends 420 KB updates for a round that is not open
// as fast as it can. Must hold: every round closes with all 1,000 updates, each acknowledged, to
// exactly the expected mean, before the round deadline (60 s); the non-reader is dropped with a
// "peer does not read" log line after send_timeout_s (2 s); the flooder's reads are paused by the
// 1 MiB read budget and its updates refused, and nothing of it reaches the link.
TEST_F(CloudFaultTest, ManyEdgesCompleteRoundsBesideASlowReaderAndAFlooder) {
  constexpr int kEdges = 1000;
  constexpr int kRounds = 3;
  ASSERT_TRUE(mlink::testing::IssueEdgeCerts(*certs_, "e", kEdges));
  rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = std::max<rlim_t>(rl.rlim_cur, std::min<rlim_t>(rl.rlim_max, 4096));
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  ASSERT_GE(rl.rlim_cur, static_cast<rlim_t>(kEdges + 200))
      << "this test holds " << kEdges << " connections: raise the open-files limit (ulimit -n)";
  const uint16_t http_port = FreePort();
  const std::string config =
      WriteConfig(kEdges, ", send_timeout_s: 2, read_budget_mib: 1", /*big=*/true, http_port);
  CloudProcess cloud(MLINK_CLOUD_BIN, config, dir_ + "/cloud.log");
  const uint16_t port = cloud.WaitPort();
  ASSERT_NE(port, 0) << cloud.Log();

  auto ctx = protocol::ClientContext::Create(1);
  std::vector<std::unique_ptr<LoadEdge>> edges;
  for (int k = 0; k < kEdges; ++k) {
    auto e = std::make_unique<LoadEdge>();
    LoadEdge* raw = e.get();
    protocol::ClientOptions o;
    o.endpoint = {"127.0.0.1", port, protocol::kFederationPath};
    const std::string n = "e" + std::to_string(k);
    o.tls = {*certs_ + "/ca.pem", *certs_ + "/" + n + ".pem", *certs_ + "/" + n + ".key"};
    o.connect_timeout_s = 30;
    o.context = ctx;
    auto c = protocol::Client::Connect(
        o,
        [raw](protocol::Message m) {
          if (std::holds_alternative<protocol::Ack>(m)) ++raw->acks;
          if (std::holds_alternative<protocol::Reject>(m)) ++raw->rejects;
          if (auto* g = std::get_if<protocol::GlobalLink>(&m)) {
            std::lock_guard<std::mutex> lock(raw->mu);
            raw->params = g->params;
            raw->round = g->round;
          }
        },
        nullptr);
    ASSERT_TRUE(c.ok()) << n << ": " << c.status();
    e->client = std::move(c).value();
    ASSERT_TRUE(e->client->Send(HelloFor({{"l1", SmallSpec().Hash()}})).ok());
    edges.push_back(std::move(e));
  }
  auto all = [&](const std::function<bool(LoadEdge&)>& f, double secs) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(secs);
    while (std::chrono::steady_clock::now() < end) {
      bool ok = true;
      for (auto& e : edges) ok = ok && f(*e);
      if (ok) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  ASSERT_TRUE(all([](LoadEdge& e) { return e.round.load() == 0; }, 60))
      << "every edge got the round-0 link";

  // The non-reader: subscribed to the big link, behind a proxy that stops reading from the
  // aggregator once it has joined; then it asks for the big global link again and again.
  TcpProxy slow_proxy(port, 4096);
  auto slow = TestEdge::Connect(*certs_, "slow", slow_proxy.port());
  ASSERT_TRUE(slow);
  ASSERT_TRUE(slow->client().Send(HelloFor({{"big", BigSpec().Hash()}})).ok());
  ASSERT_TRUE(slow->Next<protocol::Welcome>());
  ASSERT_TRUE(slow->Next<protocol::GlobalLink>());
  slow_proxy.SetMode(TcpProxy::Mode::kStallDown);
  for (int i = 0; i < 24; ++i)
    ASSERT_TRUE(slow->client().Send(HelloFor({{"big", BigSpec().Hash()}})).ok());

  // The flooder: 420 KB updates for a round that is not open, as fast as its queue takes them.
  auto flood = TestEdge::Connect(*certs_, "flood", port);
  ASSERT_TRUE(flood);
  ASSERT_TRUE(flood->client().Send(HelloFor({{"big", BigSpec().Hash()}})).ok());
  ASSERT_TRUE(flood->Next<protocol::Welcome>());
  ASSERT_TRUE(flood->Next<protocol::GlobalLink>());
  struct Flooder {
    std::atomic<bool> stop{false};
    std::atomic<long> sent{0};
    std::thread thread;
    ~Flooder() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
  } flooder;
  flooder.thread = std::thread([&] {
    auto frame = protocol::MakeFrame(UpdateFor("big", Delta(0, Initial(BigSpec(), 3).size()), 99));
    while (!flooder.stop.load()) {
      if (flood->client().SendFrame(frame).ok()) {
        ++flooder.sent;
      } else if (!flood->client().connected()) {
        break;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  });

  std::vector<float> theta = Initial(SmallSpec(), 7);
  for (int r = 0; r < kRounds; ++r) {
    std::vector<std::vector<float>> d;
    for (int k = 0; k < kEdges; ++k) d.push_back(Delta((k + r) % 7, theta.size()));
    for (int k = 0; k < kEdges; ++k)
      ASSERT_TRUE(edges[k]->client->Send(UpdateFor("l1", d[k], r)).ok());
    ASSERT_TRUE(all(
        [&](LoadEdge& e) {
          return e.acks.load() == r + 1 && e.round.load() == static_cast<uint64_t>(r + 1);
        },
        60))
        << "round " << r
        << ": every update acknowledged and the next global link received within the deadline";
    theta = Mean(theta, d);
    for (auto& e : edges) {
      std::lock_guard<std::mutex> lock(e->mu);
      ASSERT_EQ(e->params, theta) << "round " << r;
    }
  }
  for (auto& e : edges) EXPECT_EQ(e->rejects.load(), 0);

  // The non-reader never learns it was dropped (it reads nothing); the aggregator's side shows it.
  const std::string dropped = "peer does not read; dropping it edge=slow";
  for (int i = 0; i < 300 && cloud.Log().find(dropped) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::string log = cloud.Log();
  EXPECT_NE(log.find(dropped), std::string::npos) << log.substr(0, 4000);
  const std::string metrics = HttpGet(http_port, "/metrics");
  EXPECT_EQ(Metric(metrics, "mlink_connected_edges"), kEdges + 1)
      << "the edges and the flooder; the non-reader is gone";
  EXPECT_GT(Metric(metrics, "mlink_read_pauses_total"), 0)
      << "the flood was throttled by the read budget\n"
      << metrics;
  EXPECT_LE(Metric(metrics, "mlink_read_budget_held_bytes"), 1l << 20) << metrics;
  flooder.stop = true;
  flooder.thread.join();
  EXPECT_GT(flooder.sent.load(), 10);
  std::printf("flooder sent %ld updates of 420 KB\n", flooder.sent.load());
  EXPECT_EQ(log.find("round deadline"), std::string::npos) << "no round needed its deadline";
  EXPECT_NE(log.find("reason=round_not_open"), std::string::npos) << "the flood is refused";
  edges.clear();
  flood.reset();
  slow_proxy.SetMode(TcpProxy::Mode::kForward);  // lets the non-reader see its closed connection
  slow.reset();
  cloud.Kill(SIGTERM);
  auto db = sql::Database::Open(dir_ + "/state/aggregator.db");
  ASSERT_TRUE(db.ok()) << db.status();
  auto q =
      (*db)->Prepare("SELECT count(*), min(updates), max(updates) FROM rounds WHERE link = 'l1'");
  ASSERT_TRUE(q.ok() && *q->Step());
  EXPECT_EQ(q->ColumnInt(0), kRounds);
  EXPECT_EQ(q->ColumnInt(1), kEdges);
  EXPECT_EQ(q->ColumnInt(2), kEdges);
  auto big = (*db)->Prepare("SELECT round FROM links WHERE id = 'big'");
  ASSERT_TRUE(big.ok() && *big->Step());
  EXPECT_EQ(big->ColumnInt(0), 0) << "nothing of the flood reached the big link";
}

}  // namespace
}  // namespace mlink::cloud
