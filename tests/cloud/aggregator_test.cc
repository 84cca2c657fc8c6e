// The aggregator end to end: real TLS with certificates from scripts/gen-certs, real sockets on
// loopback, real SQLite files.
#include "mlink/cloud/aggregator.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "../support/cloud_support.h"
#include "../support/fed_support.h"
#include "mlink/link/link.h"

namespace mlink::cloud {
namespace {

using mlink::testing::FreePort;
using mlink::testing::HttpGet;
using mlink::testing::SmallSpec;
using mlink::testing::TestEdge;
using protocol::RejectReason;

std::vector<float> InitialParams() {
  return (*link::Link::Create(SmallSpec(), 7))->GetParams().data;
}

// Deltas whose sums are exact in binary floating point, so the expected average is exact.
std::vector<float> Delta(int k, std::size_t n) {
  std::vector<float> d(n);
  for (std::size_t i = 0; i < n; ++i) d[i] = 0.25f * static_cast<float>((k + 1) * (static_cast<int>(i % 5) - 2));
  return d;
}

std::vector<float> Expected(const std::vector<float>& theta, const std::vector<std::vector<float>>& deltas,
                            const std::vector<double>& weights) {
  std::vector<float> out(theta.size());
  double total = 0;
  for (double w : weights) total += w;
  for (std::size_t i = 0; i < theta.size(); ++i) {
    double s = 0;
    for (std::size_t k = 0; k < deltas.size(); ++k) s += weights[k] * deltas[k][i];
    out[i] = static_cast<float>(static_cast<double>(theta[i]) + s / total);
  }
  return out;
}

class AggregatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(mlink::testing::NewSuiteCerts(&certs_, "certs", "site-a site-b site-c site-x"));
    ASSERT_TRUE(mlink::testing::NewSuiteCerts(&other_, "other-ca", "site-a"));
  }
  static void TearDownTestSuite() {
    mlink::testing::DeleteSuiteDir(&certs_);
    mlink::testing::DeleteSuiteDir(&other_);
  }
  void SetUp() override { data_ = mlink::testing::TestDir("agg-"); }
  void TearDown() override { std::filesystem::remove_all(data_); }

  CloudOptions Options(int min_edges = 3, int quorum = 3, double deadline_s = 30) {
    CloudOptions o = mlink::testing::CloudOptionsFor(*certs_, data_);
    LinkOptions l = mlink::testing::LinkFor("l1", SmallSpec(), 7, min_edges, quorum, deadline_s);
    l.allowed_edges = {"site-a", "site-b", "site-c"};
    o.links.push_back(l);
    return o;
  }

  static protocol::Hello Hello(uint64_t hash = SmallSpec().Hash()) {
    protocol::Hello h;
    h.protocol_version = protocol::kProtocolVersion;
    h.links.push_back({"l1", hash});
    return h;
  }

  static protocol::Update Update(const std::vector<float>& delta, uint64_t round = 0, uint64_t samples = 10) {
    return mlink::testing::UpdateFor("l1", delta, round, samples);
  }

  // Connects, says Hello, and takes the Welcome and the first GlobalLink.
  std::unique_ptr<TestEdge> Join(const std::string& name, uint16_t port, uint64_t expect_round = 0) {
    Status err;
    auto e = TestEdge::Connect(*certs_, name, port, &err);
    EXPECT_TRUE(e) << err;
    if (!e) return nullptr;
    EXPECT_TRUE(e->client().Send(Hello()).ok());
    auto w = e->Next<protocol::Welcome>();
    EXPECT_TRUE(w && w->accepted.size() == 1) << (w && !w->refused_reasons.empty() ? w->refused_reasons[0] : "");
    auto g = e->Next<protocol::GlobalLink>();
    EXPECT_TRUE(g);
    if (g) EXPECT_EQ(g->round, expect_round);
    return e;
  }

  static std::string* certs_;
  static std::string* other_;
  std::string data_;
};
std::string* AggregatorTest::certs_ = nullptr;
std::string* AggregatorTest::other_ = nullptr;

TEST_F(AggregatorTest, ThreeEdgeRoundGivesTheExactAverage) {
  auto agg = Aggregator::Start(Options());
  ASSERT_TRUE(agg.ok()) << agg.status();
  const uint16_t port = (*agg)->port();
  std::vector<float> theta = InitialParams();
  std::vector<std::unique_ptr<TestEdge>> edges;
  for (const char* n : {"site-a", "site-b", "site-c"}) edges.push_back(Join(n, port));
  std::vector<std::vector<float>> deltas;
  for (int k = 0; k < 3; ++k) {
    deltas.push_back(Delta(k, theta.size()));
    ASSERT_TRUE(edges[k]->client().Send(Update(deltas[k])).ok());
    auto ack = edges[k]->Next<protocol::Ack>();
    ASSERT_TRUE(ack);
    EXPECT_EQ(ack->received, static_cast<uint32_t>(k + 1));
  }
  std::vector<float> expected = Expected(theta, deltas, {1, 1, 1});
  for (auto& e : edges) {
    auto g = e->Next<protocol::GlobalLink>();
    ASSERT_TRUE(g);
    EXPECT_EQ(g->round, 1u);
    EXPECT_EQ(g->params, expected) << "Theta_1 = Theta_0 + mean(Delta_k), exactly";
    EXPECT_EQ(g->checksum, protocol::ParamsChecksum(expected));
  }
  auto status = (*agg)->GetLink("l1");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->round, 1u);
  EXPECT_EQ(status->pending_updates, 0u);
  std::string metrics = (*agg)->MetricsText();
  EXPECT_NE(metrics.find("mlink_rounds_completed_total{link=\"l1\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mlink_updates_accepted_total{link=\"l1\"} 3"), std::string::npos) << metrics;
}

TEST_F(AggregatorTest, SampleWeightedAggregation) {
  CloudOptions o = Options(2, 2);
  o.links[0].aggregation = "sample_weighted";
  auto agg = Aggregator::Start(o);
  ASSERT_TRUE(agg.ok()) << agg.status();
  std::vector<float> theta = InitialParams();
  auto a = Join("site-a", (*agg)->port());
  auto b = Join("site-b", (*agg)->port());
  std::vector<std::vector<float>> d = {Delta(0, theta.size()), Delta(1, theta.size())};
  ASSERT_TRUE(a->client().Send(Update(d[0], 0, 30)).ok());
  ASSERT_TRUE(a->Next<protocol::Ack>());
  ASSERT_TRUE(b->client().Send(Update(d[1], 0, 10)).ok());
  ASSERT_TRUE(b->Next<protocol::Ack>());
  auto g = a->Next<protocol::GlobalLink>();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->params, Expected(theta, d, {30, 10}));
}

TEST_F(AggregatorTest, BadInputIsRefusedAndLeavesStateUntouched) {
  auto agg = Aggregator::Start(Options());
  ASSERT_TRUE(agg.ok()) << agg.status();
  const uint16_t port = (*agg)->port();
  std::vector<float> theta = InitialParams();
  const std::size_t n = theta.size();

  // Update before Hello.
  auto early = TestEdge::Connect(*certs_, "site-b", port);
  ASSERT_TRUE(early);
  ASSERT_TRUE(early->client().Send(Update(Delta(0, n))).ok());
  auto r0 = early->Next<protocol::Reject>();
  ASSERT_TRUE(r0);
  EXPECT_EQ(r0->reason, RejectReason::kNotHello);

  // Spec-hash mismatch and an unauthorized identity are refused at Hello.
  ASSERT_TRUE(early->client().Send(Hello(12345)).ok());
  auto w = early->Next<protocol::Welcome>();
  ASSERT_TRUE(w);
  EXPECT_TRUE(w->accepted.empty());
  ASSERT_EQ(w->refused_reasons.size(), 1u);
  EXPECT_NE(w->refused_reasons[0].find("spec_mismatch"), std::string::npos);
  auto intruder = TestEdge::Connect(*certs_, "site-x", port);
  ASSERT_TRUE(intruder);
  ASSERT_TRUE(intruder->client().Send(Hello()).ok());
  auto wx = intruder->Next<protocol::Welcome>();
  ASSERT_TRUE(wx);
  EXPECT_EQ(wx->edge_id, "site-x");
  ASSERT_EQ(wx->refused_reasons.size(), 1u);
  EXPECT_NE(wx->refused_reasons[0].find("not_authorized"), std::string::npos);
  ASSERT_TRUE(intruder->client().Send(Update(Delta(0, n))).ok());
  EXPECT_EQ(intruder->Next<protocol::Reject>()->reason, RejectReason::kNotAuthorized);

  auto a = Join("site-a", port);
  auto expect_reject = [&](const protocol::Update& u, RejectReason why) {
    ASSERT_TRUE(a->client().Send(u).ok());
    auto r = a->Next<protocol::Reject>();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->reason, why) << r->text;
    EXPECT_FALSE(r->text.empty());
  };
  protocol::Update unknown = Update(Delta(0, n));
  unknown.link_id = "nope";
  expect_reject(unknown, RejectReason::kUnknownLink);
  expect_reject(Update(Delta(0, n), 5), RejectReason::kRoundNotOpen);
  expect_reject(Update(Delta(0, n + 1)), RejectReason::kWrongShape);
  std::vector<float> nan = Delta(0, n);
  nan[3] = std::nanf("");
  expect_reject(Update(nan), RejectReason::kNonFinite);
  ASSERT_TRUE(a->client().Send(Update(Delta(0, n))).ok());
  ASSERT_TRUE(a->Next<protocol::Ack>());
  expect_reject(Update(Delta(1, n)), RejectReason::kDuplicate);

  // Wrong protocol version: refused and closed.
  auto old = TestEdge::Connect(*certs_, "site-c", port);
  protocol::Hello h = Hello();
  h.protocol_version = 99;
  ASSERT_TRUE(old->client().Send(h).ok());
  EXPECT_EQ(old->Next<protocol::Reject>()->reason, RejectReason::kVersionMismatch);
  EXPECT_TRUE(old->WaitClosed());

  // A malformed frame gets an Error and the connection closes.
  auto junk = TestEdge::Connect(*certs_, "site-c", port);
  ASSERT_TRUE(junk->client().SendFrame(std::make_shared<const std::vector<uint8_t>>(std::vector<uint8_t>{'M', 'L', 'N', 'K', 1})).ok());
  auto err = junk->Next<protocol::Error>();
  ASSERT_TRUE(err);
  EXPECT_EQ(err->reason, RejectReason::kMalformed);
  EXPECT_TRUE(junk->WaitClosed());

  // Only the one valid update is held; the global link is unchanged.
  auto s = (*agg)->GetLink("l1");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->round, 0u);
  EXPECT_EQ(s->pending_updates, 1u);
  EXPECT_EQ(s->params, theta);
  std::string metrics = (*agg)->MetricsText();
  for (const char* reason : {"not_hello", "not_authorized", "unknown_link", "round_not_open", "wrong_shape", "non_finite",
                             "duplicate", "version_mismatch", "malformed"}) {
    EXPECT_NE(metrics.find(std::string("mlink_updates_rejected_total{reason=\"") + reason + "\"} 1"), std::string::npos)
        << reason << "\n" << metrics;
  }
}

TEST_F(AggregatorTest, CertificateFailuresFailTheHandshake) {
  auto agg = Aggregator::Start(Options());
  ASSERT_TRUE(agg.ok()) << agg.status();
  const uint16_t port = (*agg)->port();
  Status err;
  // A client certificate from another CA (it trusts our CA, so only the server can refuse it).
  auto foreign = TestEdge::Connect(*other_, "site-a", port, &err, *certs_);
  EXPECT_FALSE(foreign);
  EXPECT_FALSE(err.ok());
  // The client does not trust a server signed by another CA.
  err = Status::Ok();
  auto distrust = TestEdge::Connect(*certs_, "site-a", port, &err, *other_);
  EXPECT_FALSE(distrust);
  EXPECT_NE(err.message().find("TLS handshake"), std::string::npos) << err;
  // The server certificate does not name this host.
  err = Status::Ok();
  auto wrong_host = TestEdge::Connect(*certs_, "site-a", port, &err, "", "aggregator.example");
  EXPECT_FALSE(wrong_host);
  EXPECT_NE(err.message().find("TLS handshake"), std::string::npos) << err;
  EXPECT_EQ((*agg)->GetLink("l1")->pending_updates, 0u);
}

TEST_F(AggregatorTest, EdgeThatLeavesMidRoundStillCountsAndQuorumClosesAtDeadline) {
  auto agg = Aggregator::Start(Options(3, 2, 1.0));
  ASSERT_TRUE(agg.ok()) << agg.status();
  std::vector<float> theta = InitialParams();
  std::vector<std::vector<float>> d = {Delta(0, theta.size()), Delta(1, theta.size())};
  {
    auto a = Join("site-a", (*agg)->port());
    ASSERT_TRUE(a->client().Send(Update(d[0])).ok());
    ASSERT_TRUE(a->Next<protocol::Ack>());
  }  // site-a disconnects after its acknowledged update
  auto b = Join("site-b", (*agg)->port());
  ASSERT_TRUE(b->client().Send(Update(d[1])).ok());
  ASSERT_TRUE(b->Next<protocol::Ack>());
  // site-c never comes: the deadline (1 s) closes the round with the quorum of 2.
  auto g = b->Next<protocol::GlobalLink>(10);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->round, 1u);
  EXPECT_EQ(g->params, Expected(theta, d, {1, 1}));
}

TEST_F(AggregatorTest, StateSurvivesRestartMidRound) {
  std::vector<float> theta = InitialParams();
  std::vector<std::vector<float>> d = {Delta(0, theta.size()), Delta(1, theta.size()), Delta(2, theta.size())};
  {
    auto agg = Aggregator::Start(Options());
    ASSERT_TRUE(agg.ok()) << agg.status();
    for (int k = 0; k < 2; ++k) {
      auto e = Join(k == 0 ? "site-a" : "site-b", (*agg)->port());
      ASSERT_TRUE(e->client().Send(Update(d[k])).ok());
      ASSERT_TRUE(e->Next<protocol::Ack>());
    }
  }
  auto agg = Aggregator::Start(Options());
  ASSERT_TRUE(agg.ok()) << agg.status();
  EXPECT_EQ((*agg)->GetLink("l1")->pending_updates, 2u);
  auto a = Join("site-a", (*agg)->port());
  ASSERT_TRUE(a->client().Send(Update(d[0])).ok());
  EXPECT_EQ(a->Next<protocol::Reject>()->reason, RejectReason::kDuplicate) << "counted once, even after a restart";
  auto c = Join("site-c", (*agg)->port());
  ASSERT_TRUE(c->client().Send(Update(d[2])).ok());
  ASSERT_TRUE(c->Next<protocol::Ack>());
  auto g = c->Next<protocol::GlobalLink>();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->params, Expected(theta, d, {1, 1, 1}));
}

// Many edges upload a large delta at once while the read budget holds only two of them: every
// update is still committed, acknowledged and folded exactly, reads were paused, and the bytes
// held never exceeded the budget.
TEST_F(AggregatorTest, BurstOfLargeUpdatesStaysWithinTheReadBudget) {
  constexpr int kEdges = 12;
  std::string names;
  for (int k = 0; k < kEdges; ++k) names += " burst" + std::to_string(k);
  ASSERT_TRUE(mlink::testing::GenCerts(*certs_, names));
  link::LinkSpec spec;  // vec2vec 1000 -> 50: 105,150 parameters, a 420 KB update
  spec.source = link::OutputFormat::Vector(1000);
  spec.target = link::OutputFormat::Vector(50);
  spec.task = link::TaskKind::kRegression;
  const std::vector<float> theta = (*link::Link::Create(spec, 3))->GetParams().data;
  const std::size_t budget = 1u << 20;
  CloudOptions o = Options();
  o.read_budget_bytes = budget;
  o.links[0].spec = spec;
  o.links[0].init_seed = 3;
  o.links[0].min_edges = kEdges;
  o.links[0].quorum = kEdges;
  o.links[0].allowed_edges.clear();
  auto agg = Aggregator::Start(o);
  ASSERT_TRUE(agg.ok()) << agg.status();
  ASSERT_LT(budget, 3 * theta.size() * sizeof(float)) << "the budget must hold at most two updates";

  std::vector<std::unique_ptr<TestEdge>> edges;
  std::vector<std::vector<float>> deltas;
  std::vector<protocol::Frame> frames;
  for (int k = 0; k < kEdges; ++k) {
    auto e = TestEdge::Connect(*certs_, "burst" + std::to_string(k), (*agg)->port());
    ASSERT_TRUE(e);
    ASSERT_TRUE(e->client().Send(Hello(spec.Hash())).ok());
    auto w = e->Next<protocol::Welcome>();
    ASSERT_TRUE(w && w->accepted.size() == 1);
    ASSERT_TRUE(e->Next<protocol::GlobalLink>());
    edges.push_back(std::move(e));
    deltas.push_back(Delta(k, theta.size()));
    frames.push_back(protocol::MakeFrame(Update(deltas.back())));
  }

  // Sample the held bytes while the burst is processed.
  std::atomic<bool> done{false};
  std::atomic<long> max_held{0};
  std::thread sampler([&] {
    while (!done.load()) {
      const std::string key = "\nmlink_read_budget_held_bytes ";
      std::string m = (*agg)->MetricsText();
      auto at = m.find(key);
      if (at != std::string::npos) max_held = std::max(max_held.load(), std::atol(m.c_str() + at + key.size()));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  for (int k = 0; k < kEdges; ++k) ASSERT_TRUE(edges[k]->client().SendFrame(frames[k]).ok());
  frames.clear();
  const std::vector<float> expected = Expected(theta, deltas, std::vector<double>(kEdges, 1.0));
  for (auto& e : edges) {
    ASSERT_TRUE(e->Next<protocol::Ack>(60)) << "every update is acknowledged";
  }
  for (auto& e : edges) {
    auto g = e->Next<protocol::GlobalLink>(60);
    ASSERT_TRUE(g);
    EXPECT_EQ(g->round, 1u);
    EXPECT_EQ(g->params, expected) << "Theta_1 = Theta_0 + mean(Delta_k), exactly";
  }
  done = true;
  sampler.join();
  std::string metrics = (*agg)->MetricsText();
  EXPECT_NE(metrics.find("mlink_updates_accepted_total{link=\"l1\"} 12"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("mlink_read_pauses_total 0\n"), std::string::npos) << "reads were paused\n" << metrics;
  EXPECT_NE(metrics.find("mlink_read_budget_held_bytes 0\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mlink_reads_paused 0\n"), std::string::npos) << metrics;
  EXPECT_GT(max_held.load(), 0);
  EXPECT_LE(max_held.load(), static_cast<long>(budget));
}

// ------------------------------------------------------------- the real binary, killed with -9

class CloudProcess {
 public:
  CloudProcess(const std::string& config, const std::string& log) : log_(log) {
    std::filesystem::remove(log_);
    pid_ = fork();
    if (pid_ == 0) {
      FILE* f = std::freopen(log.c_str(), "w", stderr);
      (void)f;
      execl(MLINK_CLOUD_BIN, MLINK_CLOUD_BIN, "--config", config.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~CloudProcess() { Kill(SIGKILL); }
  // Waits for the "aggregator listening" line and returns its port (0 on timeout).
  uint16_t WaitPort() {
    for (int i = 0; i < 300; ++i) {
      std::ifstream in(log_);
      std::string line;
      while (std::getline(in, line)) {
        const std::string marker = "aggregator listening federation=wss://127.0.0.1:";
        auto at = line.find(marker);
        if (at != std::string::npos) return static_cast<uint16_t>(std::stoi(line.substr(at + marker.size())));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return 0;
  }
  void Kill(int sig) {
    if (pid_ > 0) {
      ::kill(pid_, sig);
      int st;
      waitpid(pid_, &st, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

TEST_F(AggregatorTest, KillNineMidRoundLosesNothingAcknowledged) {
  std::string config = data_ + "/cloud.yaml";
  std::ofstream(config) << "server: {listen: 127.0.0.1, port: 0, http_port: 0}\n"
                        << "tls: {ca: " << *certs_ << "/ca.pem, cert: " << *certs_ << "/cloud.pem, key: " << *certs_ << "/cloud.key}\n"
                        << "data_dir: " << data_ << "/state\n"
                        << "links:\n  - id: l1\n    spec: {source: {kind: vector, dim: 3}, target: {kind: vector, dim: 2}, task: single_label}\n"
                        << "    init_seed: 7\n    round: {min_edges: 3, quorum: 3, deadline_s: 60}\n";
  std::vector<float> theta = InitialParams();
  std::vector<std::vector<float>> d = {Delta(0, theta.size()), Delta(1, theta.size()), Delta(2, theta.size())};
  {
    CloudProcess cloud(config, data_ + "/cloud1.log");
    uint16_t port = cloud.WaitPort();
    ASSERT_NE(port, 0) << "mlink-cloud did not start";
    for (int k = 0; k < 2; ++k) {
      auto e = Join(k == 0 ? "site-a" : "site-b", port);
      ASSERT_TRUE(e);
      ASSERT_TRUE(e->client().Send(Update(d[k])).ok());
      ASSERT_TRUE(e->Next<protocol::Ack>());
    }
    cloud.Kill(SIGKILL);
  }
  CloudProcess cloud(config, data_ + "/cloud2.log");
  uint16_t port = cloud.WaitPort();
  ASSERT_NE(port, 0);
  auto b = Join("site-b", port);
  ASSERT_TRUE(b->client().Send(Update(d[1])).ok());
  EXPECT_EQ(b->Next<protocol::Reject>()->reason, RejectReason::kDuplicate);
  auto c = Join("site-c", port);
  ASSERT_TRUE(c->client().Send(Update(d[2])).ok());
  auto ack = c->Next<protocol::Ack>();
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->received, 3u);
  auto g = c->Next<protocol::GlobalLink>();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->round, 1u);
  EXPECT_EQ(g->params, Expected(theta, d, {1, 1, 1}));
}

// /healthz and /metrics over plain HTTP.
TEST_F(AggregatorTest, HealthAndMetricsOverHttp) {
  CloudOptions o = Options();
  o.http_port = FreePort();
  auto agg = Aggregator::Start(o);
  ASSERT_TRUE(agg.ok()) << agg.status();
  auto a = Join("site-a", (*agg)->port());
  std::string health = HttpGet((*agg)->http_port(), "/healthz");
  EXPECT_NE(health.find("200 OK"), std::string::npos) << health;
  EXPECT_NE(health.find("\r\n\r\nok\n"), std::string::npos);
  std::string metrics = HttpGet((*agg)->http_port(), "/metrics");
  EXPECT_NE(metrics.find("mlink_connected_edges 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mlink_round{link=\"l1\"} 0"), std::string::npos);
  EXPECT_NE(HttpGet((*agg)->http_port(), "/nope").find("404"), std::string::npos);
}

}  // namespace
}  // namespace mlink::cloud
