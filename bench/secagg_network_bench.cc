// Secure aggregation over the real federation wire: one aggregator with two links of the same
// spec, "plain" (Update messages) and "secure" (secure aggregation), and K edges on loopback over
// mutual TLS, all in this process (the edges share one client I/O thread, so their crypto runs
// one after another: on a machine with more cores, edges compute in parallel). Per K: the round
// latency of each link (every edge sends, until every edge holds the next global link) and the
// bytes per edge both ways from the aggregator's own counters, with the ratios; the two links'
// new parameters must agree within the fixed-point tolerance.
//   bench_secagg_network [max_K=100] [params=10000]
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "bench_support.h"
#include "mlink/cloud/aggregator.h"
#include "mlink/common/log.h"
#include "mlink/protocol/secagg.h"
#include "mlink/protocol/transport.h"

using namespace mlink;
namespace secagg = protocol::secagg;
using bench::Counter;
using Clock = std::chrono::steady_clock;

namespace {

std::string g_certs;

link::LinkSpec SpecFor(long d) {  // vec2vec, about d parameters (s*h + h + h*t + t, h = 2t)
  const int t = 30;
  const long s = std::max<long>(1, (d - 2 * t - 2L * t * t - t) / (2 * t));
  return bench::RegressionSpec(static_cast<int>(s), t);
}

double Metric(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::atof(line.c_str() + name.size() + 1);
  }
  return 0;
}

// One edge: answers the secure link's phases from its client callback.
struct Edge {
  std::unique_ptr<protocol::Client> conn;
  std::unique_ptr<secagg::Client> sa;
  std::vector<float> input;
  std::mutex mu;

  void OnSecAgg(const protocol::SecAgg& m) {
    std::lock_guard<std::mutex> lock(mu);
    auto parsed = secagg::Parse(m.payload.data(), m.payload.size());
    if (!parsed.ok() || !sa)
      return Fail(parsed.ok() ? Status::Internal("no round") : parsed.status());
    if (auto* r = std::get_if<secagg::Roster>(&*parsed)) {
      auto s = sa->Share(*r);
      if (!s.ok()) return Fail(s.status());
      (void)conn->Send(protocol::SecAgg{"secure", secagg::Serialize(*s)});
    } else if (auto* in = std::get_if<secagg::IncomingShares>(&*parsed)) {
      auto y = sa->Mask(*in, input);
      if (!y.ok()) return Fail(y.status());
      (void)conn->Send(protocol::SecAgg{"secure", secagg::Serialize(*y)});
    } else if (auto* q = std::get_if<secagg::UnmaskRequest>(&*parsed)) {
      auto r = sa->Unmask(*q);
      if (!r.ok()) return Fail(r.status());
      (void)conn->Send(protocol::SecAgg{"secure", secagg::Serialize(*r)});
    }
  }
  static void Fail(const Status& s) {
    std::fprintf(stderr, "bench_secagg_network: edge: %s\n", s.ToString().c_str());
  }
};

int Round(int k, long d) {
  const link::LinkSpec spec = SpecFor(d);
  const std::string data = (std::filesystem::temp_directory_path() /
                            ("mlink-bench-secagg-" + std::to_string(::getpid())))
                               .string();
  std::filesystem::remove_all(data);
  cloud::CloudOptions o = bench::BenchCloudOptions(g_certs, data);
  int degree = 2 * static_cast<int>(std::ceil(std::log2(k)));
  if (degree >= k - 1) degree = 0;
  for (const char* id : {"plain", "secure"}) {
    cloud::LinkOptions l;
    l.id = id;
    l.spec = spec;
    l.min_edges = k;
    l.quorum = k;
    l.round_deadline_s = 600;
    l.secure_aggregation.enabled = std::string(id) == "secure";
    l.secure_aggregation.degree = degree;
    l.secure_aggregation.phase_timeout_s = 300;
    o.links.push_back(l);
  }
  auto agg = cloud::Aggregator::Start(o);
  if (!agg.ok()) {
    std::fprintf(stderr, "%s\n", agg.status().ToString().c_str());
    return 1;
  }
  const std::vector<float> theta = (*agg)->GetLink("plain")->params;
  const std::size_t n = theta.size();
  auto ctx = protocol::ClientContext::Create(1);
  Counter joined, plain_done, secure_done;
  std::vector<std::unique_ptr<Edge>> edges;
  for (int i = 0; i < k; ++i) {
    auto e = std::make_unique<Edge>();
    Edge* raw = e.get();
    protocol::ClientOptions co;
    co.endpoint = {"127.0.0.1", (*agg)->port(), protocol::kFederationPath};
    co.tls = {g_certs + "/ca.pem", g_certs + "/e" + std::to_string(i) + ".pem",
              g_certs + "/e" + std::to_string(i) + ".key"};
    co.connect_timeout_s = 60;
    co.idle_timeout_s = 600;
    co.context = ctx;
    auto c = protocol::Client::Connect(
        co,
        [raw, &joined, &plain_done, &secure_done](protocol::Message m) {
          if (auto* g = std::get_if<protocol::GlobalLink>(&m)) {
            if (g->round == 0) joined.Add();
            if (g->round == 1) (g->link_id == "plain" ? plain_done : secure_done).Add();
          } else if (auto* s = std::get_if<protocol::SecAgg>(&m)) {
            raw->OnSecAgg(*s);
          }
        },
        nullptr);
    if (!c.ok()) {
      std::fprintf(stderr, "edge %d: %s\n", i, c.status().ToString().c_str());
      return 1;
    }
    e->conn = std::move(*c);
    protocol::Hello h;
    h.protocol_version = protocol::kProtocolVersion;
    h.links = {{"plain", spec.Hash()}, {"secure", spec.Hash()}};
    (void)e->conn->Send(h);
    e->input.resize(n + 1);
    for (std::size_t j = 0; j < n; ++j)
      e->input[j] = 0.001f * static_cast<float>((i * 7 + static_cast<int>(j)) % 13 - 6);
    e->input[n] = 1.0f;
    edges.push_back(std::move(e));
  }
  if (!joined.WaitFor(2 * k, 300)) {
    std::fprintf(stderr, "bench_secagg_network: edges did not join\n");
    return 1;
  }

  std::string before = (*agg)->MetricsText();
  auto t0 = Clock::now();
  for (int i = 0; i < k; ++i) {
    protocol::Update u;
    u.link_id = "plain";
    u.delta.assign(edges[i]->input.begin(), edges[i]->input.end() - 1);
    u.samples = 1;
    u.checksum = protocol::ParamsChecksum(u.delta);
    (void)edges[i]->conn->Send(u);
  }
  const bool plain_ok = plain_done.WaitFor(k, 600);
  const double plain_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::string after = (*agg)->MetricsText();
  const double plain_in =
      Metric(after, "mlink_bytes_in_total") - Metric(before, "mlink_bytes_in_total");
  const double plain_out =
      Metric(after, "mlink_bytes_out_total") - Metric(before, "mlink_bytes_out_total");

  before = after;
  t0 = Clock::now();
  for (auto& e : edges) {
    std::lock_guard<std::mutex> lock(e->mu);
    auto c = secagg::Client::Create(secagg::Context{"secure", 0}, 0);
    if (!c.ok()) return 1;
    e->sa = std::move(*c);
    (void)e->conn->Send(protocol::SecAgg{"secure", secagg::Serialize(e->sa->Advertise())});
  }
  const bool secure_ok = secure_done.WaitFor(k, 600);
  const double secure_s = std::chrono::duration<double>(Clock::now() - t0).count();
  after = (*agg)->MetricsText();
  const double secure_in =
      Metric(after, "mlink_bytes_in_total") - Metric(before, "mlink_bytes_in_total");
  const double secure_out =
      Metric(after, "mlink_bytes_out_total") - Metric(before, "mlink_bytes_out_total");

  double max_diff = 0;
  auto p = (*agg)->GetLink("plain");
  auto s = (*agg)->GetLink("secure");
  if (p.ok() && s.ok()) {
    for (std::size_t j = 0; j < n; ++j)
      max_diff = std::max(max_diff, std::fabs(double(p->params[j]) - s->params[j]));
  }
  const bool ok = plain_ok && secure_ok && p.ok() && s.ok() && max_diff <= 1e-4;
  edges.clear();
  ctx.reset();
  (*agg)->Stop();
  std::filesystem::remove_all(data);
  const double plain_bytes = (plain_in + plain_out) / k,
               secure_bytes = (secure_in + secure_out) / k;
  std::printf(
      "{\"bench\":\"secagg_network_round\",\"mode\":\"aggregator and edges in one process, TLS on "
      "loopback\","
      "\"edges\":%d,\"params\":%zu,\"degree\":%d,\"ok\":%s,\"max_abs_diff\":%.3g,\"plain_round_s\":"
      "%.3f,"
      "\"secagg_round_s\":%.3f,\"round_ratio\":%.2f,\"plain_bytes_per_edge\":%.0f,\"secagg_bytes_"
      "per_edge\":%.0f,"
      "\"bytes_ratio\":%.3f,\"secagg_up_bytes_per_edge\":%.0f,\"secagg_down_bytes_per_edge\":%.0f}"
      "\n",
      k, n, degree == 0 ? k - 1 : degree, ok ? "true" : "false", max_diff, plain_s, secure_s,
      secure_s / plain_s, plain_bytes, secure_bytes, secure_bytes / plain_bytes, secure_in / k,
      secure_out / k);
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int max_k = argc > 1 ? std::atoi(argv[1]) : 100;
  const long d = argc > 2 ? std::atol(argv[2]) : 10000;
  bench::RaiseFileLimit();
  log::SetLevel(log::Level::kWarn);
  g_certs = std::string(MLINK_BUILD_DIR) + "/bench-certs";  // shared with bench_aggregator
  if (!bench::EnsureEdgeCerts(g_certs, max_k, "bench_secagg_network")) return 1;
  int failures = 0;
  for (int k : {10, 100, 1000}) {
    if (k <= max_k) failures += Round(k, d);
  }
  return failures == 0 ? 0 : 1;
}
