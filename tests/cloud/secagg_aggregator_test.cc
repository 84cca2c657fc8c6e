// Secure aggregation through the aggregator end to end: real TLS with certificates from
// scripts/gen-certs, real sockets on loopback, the real SQLite files and log file. The edges are
// test connections that run the secagg client of each phase.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "../support/cloud_support.h"
#include "../support/fed_support.h"
#include "mlink/cloud/aggregator.h"
#include "mlink/common/log.h"
#include "mlink/link/link.h"
#include "mlink/protocol/secagg.h"

namespace mlink::cloud {
namespace {

namespace secagg = protocol::secagg;
using mlink::testing::SmallSpec;
using mlink::testing::TestEdge;
using protocol::RejectReason;

std::vector<float> InitialParams() {
  return (*link::Link::Create(SmallSpec(), 7))->GetParams().data;
}

// Deltas with no zero and no multiple of 2^-16, different per edge.
std::vector<float> Delta(int k, std::size_t n) {
  std::vector<float> d(n);
  for (std::size_t i = 0; i < n; ++i) {
    d[i] = static_cast<float>(0.0137 * (k + 1) * (static_cast<int>(i % 7) - 3.5) +
                              0.00031 * static_cast<double>(i + 1));
  }
  return d;
}

std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every byte the aggregator wrote under `dir` (SQLite database, WAL, log file).
std::string EverythingWritten(const std::string& dir) {
  std::string all;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) all += ReadAll(e.path());
  }
  return all;
}

// Whether any 12-byte window of `values` (as stored in memory, little-endian) occurs in `hay`.
template <typename T>
int WindowsFound(const std::string& hay, const std::vector<T>& values) {
  int found = 0;
  for (std::size_t i = 0; i + 3 <= values.size(); ++i) {
    std::string needle(reinterpret_cast<const char*>(values.data() + i), 3 * sizeof(T));
    if (hay.find(needle) != std::string::npos) ++found;
  }
  return found;
}

class SecAggAggregatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(mlink::testing::NewSuiteCerts(&certs_, "secagg-certs",
                                              "site-a site-b site-c site-d site-e site-f"));
  }
  static void TearDownTestSuite() { mlink::testing::DeleteSuiteDir(&certs_); }
  void SetUp() override {
    data_ = mlink::testing::TestDir("secagg-");
    ASSERT_TRUE(log::SetFile(data_ + "/cloud.log"));
    log::SetLevel(log::Level::kDebug);
  }
  void TearDown() override {
    log::SetFile("");
    log::SetLevel(log::Level::kInfo);
    std::filesystem::remove_all(data_);
  }

  CloudOptions Options(int edges, double phase_timeout_s) {
    CloudOptions o = mlink::testing::CloudOptionsFor(*certs_, data_);
    LinkOptions l = mlink::testing::LinkFor("l1", SmallSpec(), 7, edges, 3, 30);
    l.secure_aggregation.enabled = true;
    l.secure_aggregation.phase_timeout_s = phase_timeout_s;
    o.links.push_back(l);
    return o;
  }

  struct Edge {
    std::unique_ptr<TestEdge> conn;
    std::unique_ptr<secagg::Client> client;
  };

  Edge Join(const std::string& name, uint16_t port, uint64_t round = 0) {
    Edge e;
    Status err;
    e.conn = TestEdge::Connect(*certs_, name, port, &err);
    EXPECT_TRUE(e.conn) << err;
    if (!e.conn) return e;
    protocol::Hello h;
    h.protocol_version = protocol::kProtocolVersion;
    h.links.push_back({"l1", SmallSpec().Hash()});
    EXPECT_TRUE(e.conn->client().Send(h).ok());
    auto w = e.conn->Next<protocol::Welcome>();
    EXPECT_TRUE(w && w->accepted.size() == 1);
    auto g = e.conn->Next<protocol::GlobalLink>();
    EXPECT_TRUE(g && g->round == round);
    auto c = secagg::Client::Create(secagg::Context{"l1", round}, 0);
    EXPECT_TRUE(c.ok()) << c.status();
    if (c.ok()) e.client = std::move(*c);
    return e;
  }

  static void Send(Edge& e, const secagg::Message& m) {
    ASSERT_TRUE(e.conn->client().Send(protocol::SecAgg{"l1", secagg::Serialize(m)}).ok());
  }

  template <typename T>
  static std::optional<T> NextPayload(Edge& e) {
    auto env = e.conn->Next<protocol::SecAgg>();
    if (!env) return std::nullopt;
    EXPECT_EQ(env->link_id, "l1");
    auto m = secagg::Parse(env->payload.data(), env->payload.size());
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok() || !std::holds_alternative<T>(*m)) {
      ADD_FAILURE() << "unexpected secure-aggregation message";
      return std::nullopt;
    }
    return std::get<T>(*m);
  }

  static std::string* certs_;
  std::string data_;
};
std::string* SecAggAggregatorTest::certs_ = nullptr;

TEST_F(SecAggAggregatorTest,
       AverageEqualsPlainAverageThroughDropsAndNothingIndividualIsStoredOrLogged) {
  auto agg = Aggregator::Start(Options(6, 1.5));
  ASSERT_TRUE(agg.ok()) << agg.status();
  const uint16_t port = (*agg)->port();
  const std::vector<float> theta = InitialParams();
  const std::size_t d = theta.size();
  const std::vector<std::string> names = {"site-a", "site-b", "site-c",
                                          "site-d", "site-e", "site-f"};
  std::vector<Edge> edges;
  for (const auto& n : names) edges.push_back(Join(n, port));
  ASSERT_EQ(edges.size(), 6u);

  // A plain Update on this link is refused.
  protocol::Update plain;
  plain.link_id = "l1";
  plain.delta = Delta(0, d);
  plain.checksum = protocol::ParamsChecksum(plain.delta);
  ASSERT_TRUE(edges[0].conn->client().Send(plain).ok());
  auto refused = edges[0].conn->Next<protocol::Reject>();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->reason, RejectReason::kSecAgg);

  // Keys for another round are refused.
  auto stale = secagg::Client::Create(secagg::Context{"l1", 5}, 0);
  ASSERT_TRUE(stale.ok());
  Send(edges[2], (*stale)->Advertise());
  auto not_open = edges[2].conn->Next<protocol::Reject>();
  ASSERT_TRUE(not_open);
  EXPECT_EQ(not_open->reason, RejectReason::kRoundNotOpen);

  for (auto& e : edges) Send(e, e.client->Advertise());
  for (auto& e : edges) {
    auto roster = NextPayload<secagg::Roster>(e);
    ASSERT_TRUE(roster);
    EXPECT_EQ(roster->total_clients, 6u);
    auto shares = e.client->Share(*roster);
    ASSERT_TRUE(shares.ok()) << shares.status();
    Send(e, *shares);
  }

  // Inputs are (delta, weight 1). site-e leaves once it holds its shares (dropped after
  // sharing: its pairwise masks are rebuilt); site-f sends its input, then never answers the
  // unmask request (its self mask is rebuilt from the others' shares).
  std::vector<std::vector<float>> inputs;
  for (std::size_t k = 0; k < edges.size(); ++k) {
    auto incoming = NextPayload<secagg::IncomingShares>(edges[k]);
    ASSERT_TRUE(incoming);
    std::vector<float> x = Delta(static_cast<int>(k), d);
    x.push_back(1.0f);
    inputs.push_back(x);
    if (names[k] == "site-e") continue;
    auto y = edges[k].client->Mask(*incoming, x);
    ASSERT_TRUE(y.ok()) << y.status();
    Send(edges[k], *y);
  }
  edges[4].conn.reset();
  for (std::size_t k = 0; k < edges.size(); ++k) {
    if (names[k] == "site-e") continue;
    auto request = NextPayload<secagg::UnmaskRequest>(edges[k]);
    ASSERT_TRUE(request);
    EXPECT_EQ(request->survivors.size(), 5u);
    if (names[k] == "site-f") continue;
    auto r = edges[k].client->Unmask(*request);
    ASSERT_TRUE(r.ok()) << r.status();
    Send(edges[k], *r);
  }
  std::vector<float> expected(d);
  for (std::size_t i = 0; i < d; ++i) {
    double s = 0;
    for (std::size_t k = 0; k < inputs.size(); ++k) s += names[k] == "site-e" ? 0.0 : inputs[k][i];
    expected[i] = static_cast<float>(theta[i] + s / 5.0);
  }
  for (std::size_t k = 0; k < edges.size(); ++k) {
    if (names[k] == "site-e") continue;
    auto g = edges[k].conn->Next<protocol::GlobalLink>(15);
    ASSERT_TRUE(g);
    EXPECT_EQ(g->round, 1u);
    for (std::size_t i = 0; i < d; ++i)
      EXPECT_NEAR(g->params[i], expected[i], 2e-5) << i;  // fixed point: 2^-17
  }
  auto status = (*agg)->GetLink("l1");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->rounds_completed, 1u);
  EXPECT_EQ(status->round, 1u);
  edges.clear();
  (*agg)->Stop();

  // Nothing the aggregator wrote holds an edge's input: neither its floats nor its fixed-point
  // words. The final parameters are found, so the scan does see what is stored.
  secagg::Params fp;
  fp.frac_bits = 16;
  fp.clip = 8;
  const std::string written = EverythingWritten(data_);
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    auto words = secagg::EncodeFixedPoint(inputs[k], fp);
    ASSERT_TRUE(words.ok());
    EXPECT_EQ(WindowsFound(written, inputs[k]), 0) << names[k];
    EXPECT_EQ(WindowsFound(written, *words), 0) << names[k];
  }
  EXPECT_GT(WindowsFound(written, status->params), 0);
  const std::string log_text = ReadAll(data_ + "/cloud.log");
  EXPECT_NE(log_text.find("secure aggregation: sum unmasked"), std::string::npos);
  EXPECT_NE(log_text.find("dropped_after_sharing=1"), std::string::npos) << log_text;
}

TEST_F(SecAggAggregatorTest, TooFewAnswersFailTheRoundClearlyAndItRestarts) {
  auto agg = Aggregator::Start(Options(4, 0.5));
  ASSERT_TRUE(agg.ok()) << agg.status();
  const uint16_t port = (*agg)->port();
  const std::vector<float> theta = InitialParams();
  std::vector<Edge> edges;
  for (const char* n : {"site-a", "site-b", "site-c", "site-d"}) edges.push_back(Join(n, port));
  // Keys signed as another edge are refused.
  secagg::ClientOptions impostor;
  impostor.context = {"l1", 0};
  impostor.key_pem = ReadAll(*certs_ + "/site-c.key");
  impostor.certificate_pem = ReadAll(*certs_ + "/site-c.pem");
  auto as_c = secagg::Client::Create(impostor);
  ASSERT_TRUE(as_c.ok()) << as_c.status();
  Send(edges[1], (*as_c)->Advertise());
  auto signed_as_other = edges[1].conn->Next<protocol::Reject>();
  ASSERT_TRUE(signed_as_other);
  EXPECT_EQ(signed_as_other->reason, RejectReason::kSecAgg);
  EXPECT_NE(signed_as_other->text.find("signed as 'site-c', not as this edge ('site-b')"),
            std::string::npos)
      << signed_as_other->text;
  // A second advertisement from the same edge is refused.
  Send(edges[0], edges[0].client->Advertise());
  Send(edges[0], edges[0].client->Advertise());
  auto dup = edges[0].conn->Next<protocol::Reject>();
  ASSERT_TRUE(dup);
  EXPECT_EQ(dup->reason, RejectReason::kSecAgg);
  EXPECT_NE(dup->text.find("already advertised"), std::string::npos) << dup->text;
  for (std::size_t k = 1; k < edges.size(); ++k) Send(edges[k], edges[k].client->Advertise());
  for (auto& e : edges) {
    auto roster = NextPayload<secagg::Roster>(e);
    ASSERT_TRUE(roster);
    auto shares = e.client->Share(*roster);
    ASSERT_TRUE(shares.ok()) << shares.status();
    Send(e, *shares);
  }
  for (std::size_t k = 0; k < edges.size(); ++k) {
    auto incoming = NextPayload<secagg::IncomingShares>(edges[k]);
    ASSERT_TRUE(incoming);
    std::vector<float> x = Delta(static_cast<int>(k), theta.size());
    x.push_back(1.0f);
    auto y = edges[k].client->Mask(*incoming, x);
    ASSERT_TRUE(y.ok()) << y.status();
    Send(edges[k], *y);
  }
  // Complete graph of 4, threshold 2: with one answer, no self mask has 2 shares.
  for (std::size_t k = 0; k < edges.size(); ++k) {
    auto request = NextPayload<secagg::UnmaskRequest>(edges[k]);
    ASSERT_TRUE(request);
    if (k != 0) continue;
    auto r = edges[k].client->Unmask(*request);
    ASSERT_TRUE(r.ok()) << r.status();
    Send(edges[k], *r);
  }
  for (auto& e : edges) {
    auto reject = e.conn->Next<protocol::Reject>(10);
    ASSERT_TRUE(reject);
    EXPECT_EQ(reject->reason, RejectReason::kSecAgg);
    EXPECT_EQ(reject->round, 0u);
    EXPECT_NE(reject->text.find("failed in unmasking"), std::string::npos) << reject->text;
    EXPECT_NE(reject->text.find("2 needed"), std::string::npos) << reject->text;
    auto g = e.conn->Next<protocol::GlobalLink>();
    ASSERT_TRUE(g);
    EXPECT_EQ(g->round, 1u);
    EXPECT_EQ(g->params, theta);  // nothing applied
  }
  auto status = (*agg)->GetLink("l1");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->rounds_completed, 0u);
  const std::string log_text = ReadAll(data_ + "/cloud.log");
  EXPECT_NE(log_text.find("secure aggregation round failed"), std::string::npos);
}

}  // namespace
}  // namespace mlink::cloud
