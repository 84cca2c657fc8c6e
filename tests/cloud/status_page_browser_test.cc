// The aggregator's status page end to end: a real aggregator over mutual TLS on loopback, test
// edges running rounds with known metrics, the page read over HTTP and rendered by headless
// Chromium (Debian's chromium package, installed by scripts/setup): the DOM must hold the sites,
// rounds and counts, and the screenshot must be a real rendering with the metric plot in it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <regex>
#include <sstream>

#include "../support/cloud_support.h"
#include "../support/fed_support.h"
#include "mlink/cloud/aggregator.h"
#include "mlink/common/sqlite.h"
#include "mlink/link/link.h"

namespace mlink::cloud {
namespace {

using mlink::testing::FreePort;
using mlink::testing::HttpGet;
using mlink::testing::SmallSpec;
using mlink::testing::TestEdge;

constexpr const char* kChromium = "/usr/bin/chromium";

std::string Body(const std::string& response) {
  auto p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs headless Chromium on `url` with `mode` ("--dump-dom" or "--screenshot=<png>") and a fresh
// profile; returns its exit status, with stdout in *out and stderr in *err.
int RunChromium(const std::string& dir, const std::string& mode, const std::string& url,
                std::string* out, std::string* err) {
  static int n = 0;
  std::string profile = dir + "/profile-" + std::to_string(++n);
  std::string cmd =
      std::string("timeout 90 ") + kChromium +
      " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-quic --no-first-run"
      " --disable-background-networking --disable-component-update --disable-sync"
      " --user-data-dir=" +
      profile + " --window-size=1200,900 " + mode + " " + url + " > " + dir + "/chromium.out 2> " +
      dir + "/chromium.err";
  int rc = std::system(cmd.c_str());
  *out = ReadFile(dir + "/chromium.out");
  *err = ReadFile(dir + "/chromium.err");
  std::filesystem::remove_all(profile);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// The <tr> of the site table whose first cell is `site`, or "" if there is none.
std::string SiteRow(const std::string& dom, const std::string& site) {
  std::smatch m;
  std::regex re("<tr><td class=\"l site\">" + site + "</td>.*?</tr>");
  return std::regex_search(dom, m, re) ? m.str() : "";
}

std::string RoundRow(const std::string& dom, uint64_t round) {
  std::smatch m;
  std::regex re("<tr data-round=\"" + std::to_string(round) + "\">.*?</tr>");
  return std::regex_search(dom, m, re) ? m.str() : "";
}

class StatusPageBrowserTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(mlink::testing::NewSuiteCerts(&certs_, "status-certs", "site-a site-b site-c"));
  }
  static void TearDownTestSuite() { mlink::testing::DeleteSuiteDir(&certs_); }
  void SetUp() override { dir_ = mlink::testing::TestDir("status-"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CloudOptions Options(int min_edges) {
    CloudOptions o = mlink::testing::CloudOptionsFor(*certs_, dir_ + "/data");
    o.http_port = FreePort();
    LinkOptions l = mlink::testing::LinkFor("l1", SmallSpec(), 7, min_edges, min_edges, 30);
    l.allowed_edges = {"site-a", "site-b", "site-c"};
    o.links.push_back(l);
    return o;
  }

  std::unique_ptr<TestEdge> Join(const std::string& name, uint16_t port, uint64_t expect_round) {
    Status err;
    auto e = TestEdge::Connect(*certs_, name, port, &err);
    EXPECT_TRUE(e) << err;
    if (!e) return nullptr;
    protocol::Hello h;
    h.protocol_version = protocol::kProtocolVersion;
    h.links.push_back({"l1", SmallSpec().Hash()});
    EXPECT_TRUE(e->client().Send(h).ok());
    auto w = e->Next<protocol::Welcome>();
    EXPECT_TRUE(w && w->accepted.size() == 1);
    auto g = e->Next<protocol::GlobalLink>();
    EXPECT_TRUE(g && g->round == expect_round);
    return e;
  }

  static protocol::Update Update(std::size_t n, uint64_t round, uint64_t samples, double metric) {
    protocol::Update u;
    u.link_id = "l1";
    u.base_round = round;
    u.delta.assign(n, 0.125f);
    u.samples = samples;
    u.loss = 1.0 - metric;
    u.metric = metric;
    u.checksum = protocol::ParamsChecksum(u.delta);
    return u;
  }

  static std::string* certs_;
  std::string dir_;
};
std::string* StatusPageBrowserTest::certs_ = nullptr;

TEST_F(StatusPageBrowserTest, HeadlessChromiumShowsSitesRoundsCountsAndThePlot) {
  ASSERT_TRUE(std::filesystem::exists(kChromium))
      << kChromium << " is missing: this test renders the status page in headless Chromium; "
      << "scripts/setup installs it (Debian package chromium)";
  auto agg = Aggregator::Start(Options(3));
  ASSERT_TRUE(agg.ok()) << agg.status();
  const uint16_t port = (*agg)->port();
  auto link = (*agg)->GetLink("l1");
  ASSERT_TRUE(link.ok()) << link.status();
  const std::size_t n = link->params.size();
  auto a = Join("site-a", port, 0), b = Join("site-b", port, 0), c = Join("site-c", port, 0);
  ASSERT_TRUE(a && b && c);

  // Three rounds; the sites report metrics a < b < c with 10, 20 and 30 samples.
  std::vector<double> expected;
  for (uint64_t r = 0; r < 3; ++r) {
    const double ma = 0.5 + 0.1 * r, mb = 0.6 + 0.1 * r, mc = 0.7 + 0.1 * r;
    expected.push_back((ma * 10 + mb * 20 + mc * 30) / 60);
    ASSERT_TRUE(a->client().Send(Update(n, r, 10, ma)).ok());
    ASSERT_TRUE(a->Next<protocol::Ack>());
    ASSERT_TRUE(c->client().Send(Update(n, r, 30, mc)).ok());
    ASSERT_TRUE(c->Next<protocol::Ack>());
    if (r == 1) {  // site-c sends its round-1 update twice: the second is a duplicate
      ASSERT_TRUE(c->client().Send(Update(n, r, 30, mc)).ok());
      auto rej = c->Next<protocol::Reject>();
      ASSERT_TRUE(rej);
      EXPECT_EQ(rej->reason, protocol::RejectReason::kDuplicate);
    }
    ASSERT_TRUE(b->client().Send(Update(n, r, 20, mb)).ok());
    ASSERT_TRUE(b->Next<protocol::Ack>());
    for (auto* e : {a.get(), b.get(), c.get()}) {
      auto g = e->Next<protocol::GlobalLink>();
      ASSERT_TRUE(g && g->round == r + 1);
    }
  }
  // A stale update in round 3 (it names round 1).
  ASSERT_TRUE(a->client().Send(Update(n, 1, 10, 0.1)).ok());
  auto stale = a->Next<protocol::Reject>();
  ASSERT_TRUE(stale);
  EXPECT_EQ(stale->reason, protocol::RejectReason::kRoundNotOpen);

  const uint16_t http = (*agg)->http_port();
  // status.json: the same data, machine-readable.
  std::string json_response = HttpGet(http, "/status.json");
  ASSERT_NE(json_response.find("200 OK"), std::string::npos) << json_response;
  ASSERT_NE(json_response.find("Content-Type: application/json"), std::string::npos);
  auto j = nlohmann::json::parse(Body(json_response));
  ASSERT_EQ(j["sites"].size(), 3u);
  const std::vector<std::tuple<std::string, int, int, int>> sites = {
      {"site-a", 4, 3, 1}, {"site-b", 3, 3, 0}, {"site-c", 4, 3, 1}};
  for (std::size_t i = 0; i < 3; ++i) {
    const auto& [name, sent, acc, rej] = sites[i];
    EXPECT_EQ(j["sites"][i]["identity"], name);
    EXPECT_EQ(j["sites"][i]["connected"], true);
    EXPECT_EQ(j["sites"][i]["address"].get<std::string>().rfind("127.0.0.1:", 0), 0u);
    EXPECT_EQ(j["sites"][i]["updates_sent"], sent) << name;
    EXPECT_EQ(j["sites"][i]["accepted"], acc) << name;
    EXPECT_EQ(j["sites"][i]["rejected"], rej) << name;
  }
  const auto& rounds = j["links"][0]["rounds"];
  EXPECT_EQ(j["links"][0]["round"], 3);
  ASSERT_EQ(rounds.size(), 4u);
  for (uint64_t r = 0; r < 3; ++r) {
    EXPECT_EQ(rounds[r]["round"], r);
    EXPECT_EQ(rounds[r]["open"], false);
    EXPECT_EQ(rounds[r]["accepted"], 3);
    EXPECT_EQ(rounds[r]["samples"], 60);
    EXPECT_DOUBLE_EQ(rounds[r]["metric"].get<double>(), expected[r]);
    EXPECT_GE(rounds[r]["closed_at"].get<double>(), rounds[r]["opened_at"].get<double>());
  }
  EXPECT_EQ(rounds[1]["received"], 4);
  EXPECT_EQ(rounds[1]["reject_reasons"]["duplicate"], 1);
  EXPECT_EQ(rounds[3]["open"], true);
  EXPECT_EQ(rounds[3]["reject_reasons"]["round_not_open"], 1);

  // The page in a real browser.
  const std::string url = "http://127.0.0.1:" + std::to_string(http) + "/";
  std::string dom, err;
  int rc = RunChromium(dir_, "--dump-dom", url, &dom, &err);
  ASSERT_EQ(rc, 0) << "chromium --dump-dom failed (" << rc << "): " << err;
  ASSERT_NE(dom.find("<title>mlink aggregator status</title>"), std::string::npos) << dom;
  EXPECT_NE(dom.find("<span id=\"connected\">3</span> of 3 known sites connected"),
            std::string::npos)
      << dom;
  for (const auto& [name, sent, acc, rej] : sites) {
    std::string row = SiteRow(dom, name);
    ASSERT_FALSE(row.empty()) << name << " missing from the DOM:\n" << dom;
    std::string counts = "<td>" + std::to_string(sent) + "</td><td>" + std::to_string(acc) +
                         "</td><td" + (rej ? " class=\"bad\"" : "") + ">" + std::to_string(rej) +
                         "</td></tr>";
    EXPECT_NE(row.find("connected"), std::string::npos) << row;
    EXPECT_NE(row.find("127.0.0.1:"), std::string::npos) << row;
    EXPECT_EQ(row.substr(row.size() - counts.size()), counts) << row;
  }
  EXPECT_NE(dom.find("open round <span class=\"round\">3</span>"), std::string::npos);
  EXPECT_NE(dom.find("3 rounds closed since start, 9 updates accepted, 2 rejected"),
            std::string::npos);
  // Per round: received, accepted, rejected, reasons, samples, metric (4 decimals).
  char metric[3][16];
  for (int r = 0; r < 3; ++r) std::snprintf(metric[r], sizeof(metric[r]), "%.4f", expected[r]);
  const std::vector<std::string> tails = {
      std::string("<td>3</td><td>3</td><td>0</td><td class=\"l\"></td><td>60</td><td>") +
          metric[0] + "</td></tr>",
      std::string("<td>4</td><td>3</td><td class=\"bad\">1</td><td "
                  "class=\"l\">duplicate&nbsp;1</td><td>60</td><td>") +
          metric[1] + "</td></tr>",
      std::string("<td>3</td><td>3</td><td>0</td><td class=\"l\"></td><td>60</td><td>") +
          metric[2] + "</td></tr>",
      "<td>1</td><td>0</td><td class=\"bad\">1</td><td "
      "class=\"l\">round_not_open&nbsp;1</td><td>0</td><td>–</td></tr>"};
  for (uint64_t r = 0; r < 4; ++r) {
    std::string row = RoundRow(dom, r);
    ASSERT_FALSE(row.empty()) << "round " << r << " missing from the DOM:\n" << dom;
    EXPECT_EQ(
        row.rfind("<tr data-round=\"" + std::to_string(r) + "\"><td>" + std::to_string(r) + "</td>",
                  0),
        0u);
    EXPECT_EQ(row.substr(row.size() - std::min(row.size(), tails[r].size())), tails[r]) << row;
  }
  EXPECT_NE(RoundRow(dom, 3).find(">open<"), std::string::npos);
  EXPECT_NE(dom.find("<polyline fill=\"none\" stroke=\"#d62728\""), std::string::npos);

  // The screenshot: the window's size, mostly white page with text, and the plot's line colour.
  const std::string png = dir_ + "/status.png";
  std::string out;
  rc = RunChromium(dir_, "--screenshot=" + png, url, &out, &err);
  ASSERT_EQ(rc, 0) << "chromium --screenshot failed (" << rc << "): " << err;
  if (const char* keep = std::getenv("MLINK_STATUS_SCREENSHOT"))
    std::filesystem::copy_file(png, keep, std::filesystem::copy_options::overwrite_existing);
  cv::Mat img = cv::imread(png, cv::IMREAD_COLOR);
  ASSERT_FALSE(img.empty()) << png << " is not a decodable PNG; chromium said: " << err;
  EXPECT_EQ(img.cols, 1200);
  EXPECT_EQ(img.rows, 900);
  int white = 0, dark = 0, plot = 0;
  for (int y = 0; y < img.rows; ++y) {
    for (int x = 0; x < img.cols; ++x) {
      const cv::Vec3b& p = img.at<cv::Vec3b>(y, x);  // BGR
      if (p[0] > 245 && p[1] > 245 && p[2] > 245) ++white;
      if (p[0] < 90 && p[1] < 90 && p[2] < 90) ++dark;  // text
      if (std::abs(p[2] - 214) <= 24 && std::abs(p[1] - 39) <= 30 && std::abs(p[0] - 40) <= 30)
        ++plot;
    }
  }
  const double total = static_cast<double>(img.rows) * img.cols;
  EXPECT_GT(white / total, 0.5) << "the page background should be white";
  EXPECT_GT(dark, 2000) << "no text rendered";
  EXPECT_GT(plot, 300) << "the metric plot's line (#d62728) is not in the screenshot";
}

TEST_F(StatusPageBrowserTest, RoundHistoryAndMetricsSurviveARestart) {
  CloudOptions o = Options(2);
  std::vector<float> expect_params;
  {
    auto agg = Aggregator::Start(o);
    ASSERT_TRUE(agg.ok()) << agg.status();
    const std::size_t n = (*agg)->GetLink("l1")->params.size();
    auto a = Join("site-a", (*agg)->port(), 0), b = Join("site-b", (*agg)->port(), 0);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->client().Send(Update(n, 0, 8, 0.25)).ok());
    ASSERT_TRUE(a->Next<protocol::Ack>());
    ASSERT_TRUE(b->client().Send(Update(n, 0, 24, 0.75)).ok());
    ASSERT_TRUE(b->Next<protocol::Ack>());
    ASSERT_TRUE(a->Next<protocol::GlobalLink>());
    ASSERT_TRUE(a->client().Send(Update(n, 1, 4, 0.5)).ok());  // round 1 stays open
    ASSERT_TRUE(a->Next<protocol::Ack>());
  }
  o.http_port = FreePort();
  auto agg = Aggregator::Start(o);
  ASSERT_TRUE(agg.ok()) << agg.status();
  auto j = nlohmann::json::parse(Body(HttpGet((*agg)->http_port(), "/status.json")));
  EXPECT_TRUE(j["sites"].empty());
  const auto& l = j["links"][0];
  EXPECT_EQ(l["round"], 1);
  EXPECT_EQ(l["rounds_completed"], 0);  // since this start
  ASSERT_EQ(l["rounds"].size(), 2u);
  const auto& r0 = l["rounds"][0];
  EXPECT_EQ(r0["round"], 0);
  EXPECT_EQ(r0["open"], false);
  EXPECT_EQ(r0["accepted"], 2);
  EXPECT_EQ(r0["samples"], 32);
  EXPECT_DOUBLE_EQ(r0["metric"].get<double>(), (0.25 * 8 + 0.75 * 24) / 32);  // 0.625, from SQLite
  EXPECT_TRUE(r0["rejected"].is_null())
      << "rejections are not stored, so not known after a restart";
  const auto& r1 = l["rounds"][1];
  EXPECT_EQ(r1["round"], 1);
  EXPECT_EQ(r1["open"], true);
  EXPECT_EQ(r1["accepted"], 1);  // the acknowledged update, reloaded
  EXPECT_EQ(r1["metric"], 0.5);
  std::string html = Body(HttpGet((*agg)->http_port(), "/status"));
  EXPECT_NE(html.find("<tr data-round=\"0\"><td>0</td>"), std::string::npos) << html;
  EXPECT_NE(
      html.find(
          "<td>&ndash;</td><td class=\"l off\">not stored</td><td>32</td><td>0.6250</td></tr>"),
      std::string::npos)
      << html;
  EXPECT_NE(html.find("<polyline"), std::string::npos);
}

// A NaN metric would poison the plot and, stored as NULL in a NOT NULL column, fail the commit of
// every update batched with it: it is refused up front with its own reason.
TEST_F(StatusPageBrowserTest, NonFiniteMetricIsRefusedAndCounted) {
  auto agg = Aggregator::Start(Options(1));
  ASSERT_TRUE(agg.ok()) << agg.status();
  const std::size_t n = (*agg)->GetLink("l1")->params.size();
  auto a = Join("site-a", (*agg)->port(), 0);
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->client().Send(Update(n, 0, 10, std::nan(""))).ok());
  auto rej = a->Next<protocol::Reject>();
  ASSERT_TRUE(rej);
  EXPECT_EQ(rej->reason, protocol::RejectReason::kNonFinite) << rej->text;
  ASSERT_TRUE(a->client().Send(Update(n, 0, 10, 0.5)).ok());
  ASSERT_TRUE(a->Next<protocol::Ack>());
  ASSERT_TRUE(a->Next<protocol::GlobalLink>());
  auto j = nlohmann::json::parse(Body(HttpGet((*agg)->http_port(), "/status.json")));
  const auto& r0 = j["links"][0]["rounds"][0];
  EXPECT_EQ(r0["received"], 2);
  EXPECT_EQ(r0["accepted"], 1);
  EXPECT_EQ(r0["reject_reasons"]["non_finite"], 1);
  EXPECT_EQ(r0["metric"], 0.5);
}

// A database written before rounds kept their metric (schema version 1) is upgraded in place;
// its closed rounds stay in the history with the metric shown as unknown.
TEST_F(StatusPageBrowserTest, RoundsFromAnOlderStoreShowAnUnknownMetric) {
  {
    std::filesystem::create_directories(dir_ + "/data");
    auto db = sql::Database::Open(dir_ + "/data/aggregator.db");
    ASSERT_TRUE(db.ok()) << db.status();
    // The schema as version 1 wrote it.
    auto v = (*db)->Migrate(
        {"CREATE TABLE links (id TEXT PRIMARY KEY, spec_hash TEXT NOT NULL, round INTEGER NOT NULL,"
         " params BLOB NOT NULL);"
         "CREATE TABLE updates (link TEXT NOT NULL, round INTEGER NOT NULL, edge TEXT NOT NULL,"
         " samples INTEGER NOT NULL, loss REAL NOT NULL, metric REAL NOT NULL, delta BLOB NOT NULL,"
         " received_at REAL NOT NULL, PRIMARY KEY (link, round, edge));"
         "CREATE TABLE rounds (link TEXT NOT NULL, round INTEGER NOT NULL, updates INTEGER NOT "
         "NULL,"
         " duration_s REAL NOT NULL, closed_at REAL NOT NULL, PRIMARY KEY (link, round));"});
    ASSERT_TRUE(v.ok() && *v == 1) << v.status();
    std::vector<float> params = (*link::Link::Create(SmallSpec(), 7))->GetParams().data;
    auto ins =
        (*db)->Prepare("INSERT INTO links (id, spec_hash, round, params) VALUES ('l1', ?, 1, ?)");
    ASSERT_TRUE(ins.ok());
    ASSERT_TRUE(ins->Bind(1, SmallSpec().HashHex())
                    .BindBlob(2, params.data(), params.size() * sizeof(float))
                    .Run()
                    .ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO rounds VALUES ('l1', 0, 2, 1.5, 1795000000)").ok());
  }
  auto agg = Aggregator::Start(Options(2));
  ASSERT_TRUE(agg.ok()) << agg.status();
  auto j = nlohmann::json::parse(Body(HttpGet((*agg)->http_port(), "/status.json")));
  const auto& rounds = j["links"][0]["rounds"];
  ASSERT_EQ(rounds.size(), 2u);
  EXPECT_EQ(rounds[0]["round"], 0);
  EXPECT_EQ(rounds[0]["accepted"], 2);
  EXPECT_EQ(rounds[0]["duration_s"], 1.5);
  EXPECT_EQ(rounds[0]["closed_at"], 1795000000.0);
  EXPECT_TRUE(rounds[0]["metric"].is_null());
  EXPECT_EQ(rounds[1]["round"], 1);
  EXPECT_EQ(rounds[1]["open"], true);
  std::string html = Body(HttpGet((*agg)->http_port(), "/"));
  EXPECT_NE(html.find("<td class=\"l\">2026-11-18 11:06:40</td><td>1.50 "
                      "s</td><td>2</td><td>2</td><td>&ndash;</td>"
                      "<td class=\"l off\">not stored</td><td>0</td><td>&ndash;</td></tr>"),
            std::string::npos)
      << html;
  EXPECT_NE(html.find("No closed round with a reported metric yet."), std::string::npos);
}

}  // namespace
}  // namespace mlink::cloud
