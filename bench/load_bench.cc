// Federation rounds under load with misbehaving peers: K edges (default 1,000) over mutual TLS on
// loopback go through R rounds of a small link (564 parameters) with nobody else connected (the
// baseline), then R more rounds while a client that never reads keeps asking for a 420 KB global
// link (its socket buffers fill; the aggregator drops it after send_timeout_s) and a flooder
// sends 420 KB updates for a round that is not open as fast as it can (throttled by a 4 MiB read
// budget). One JSON line: mean round latency with and without them, and their ratio.
//   bench_load [edges] [rounds]
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

#include "../tests/support/cloud_support.h"
#include "../tests/support/edge_certs.h"
#include "../tests/support/tcp_proxy.h"
#include "bench_support.h"
#include "mlink/cloud/aggregator.h"
#include "mlink/common/log.h"
#include "mlink/link/link.h"
#include "mlink/protocol/transport.h"

using namespace mlink;
using mlink::testing::Metric;
using Clock = std::chrono::steady_clock;

namespace {

std::string g_certs;

protocol::Hello HelloFor(const std::string& link, const link::LinkSpec& spec) {
  protocol::Hello h;
  h.protocol_version = protocol::kProtocolVersion;
  h.links.push_back({link, spec.Hash()});
  return h;
}

struct Edge {
  std::unique_ptr<protocol::Client> client;
  std::atomic<int> acks{0};
  std::atomic<uint64_t> round{UINT64_MAX};
};

}  // namespace

int main(int argc, char** argv) {
  const int k = argc > 1 ? std::atoi(argv[1]) : 1000;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 5;
  bench::RaiseFileLimit();
  log::SetLevel(log::Level::kError);
  g_certs = std::string(MLINK_BUILD_DIR) + "/bench-load-certs";
  if (std::system((std::string(MLINK_SOURCE_DIR) + "/scripts/gen-certs " + g_certs +
                   " slow flood > /dev/null")
                      .c_str()) != 0 ||
      !testing::IssueEdgeCerts(g_certs, "e", k)) {
    std::fprintf(stderr, "bench_load: cannot issue certificates in %s\n", g_certs.c_str());
    return 1;
  }
  const link::LinkSpec small = bench::RegressionSpec(10, 12), big = bench::RegressionSpec(1000, 50);
  const std::string data = "/tmp/mlink-bench-load-" + std::to_string(::getpid());
  std::filesystem::remove_all(data);
  cloud::CloudOptions o = bench::BenchCloudOptions(g_certs, data);
  o.send_timeout_s = 2;
  o.read_budget_bytes = 4u << 20;
  cloud::LinkOptions l;
  l.id = "small";
  l.spec = small;
  l.min_edges = l.quorum = k;
  l.round_deadline_s = 600;
  o.links.push_back(l);
  l.id = "big";
  l.spec = big;
  l.min_edges = l.quorum = 100000;
  o.links.push_back(l);
  auto agg = cloud::Aggregator::Start(o);
  if (!agg.ok()) {
    std::fprintf(stderr, "%s\n", agg.status().ToString().c_str());
    return 1;
  }
  const uint16_t port = (*agg)->port();
  const std::size_t n_small = (*agg)->GetLink("small")->params.size();
  const std::size_t n_big = (*agg)->GetLink("big")->params.size();

  auto ctx = protocol::ClientContext::Create(1);
  std::vector<std::unique_ptr<Edge>> edges;
  auto t_connect = Clock::now();
  for (int i = 0; i < k; ++i) {
    auto e = std::make_unique<Edge>();
    Edge* raw = e.get();
    auto c = protocol::Client::Connect(
        bench::ClientFor(g_certs, port, "e" + std::to_string(i), ctx),
        [raw](protocol::Message m) {
          if (std::holds_alternative<protocol::Ack>(m)) ++raw->acks;
          if (auto* g = std::get_if<protocol::GlobalLink>(&m)) raw->round = g->round;
        },
        nullptr);
    if (!c.ok()) {
      std::fprintf(stderr, "edge %d: %s\n", i, c.status().ToString().c_str());
      return 1;
    }
    e->client = std::move(c).value();
    (void)e->client->Send(HelloFor("small", small));
    edges.push_back(std::move(e));
  }
  auto wait_all = [&](int acks, uint64_t round) {
    auto end = Clock::now() + std::chrono::seconds(600);
    while (Clock::now() < end) {
      bool ok = true;
      for (auto& e : edges) ok = ok && e->acks.load() >= acks && e->round.load() == round;
      if (ok) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  };
  bool all_ok = wait_all(0, 0);
  const double connect_s = std::chrono::duration<double>(Clock::now() - t_connect).count();
  protocol::Update u;
  u.link_id = "small";
  u.delta.assign(n_small, 0.25f);
  u.samples = 1;
  u.checksum = protocol::ParamsChecksum(u.delta);
  int r = 0;
  auto run_rounds = [&](int count) {
    double total = 0;
    for (int i = 0; i < count && all_ok; ++i, ++r) {
      u.base_round = static_cast<uint64_t>(r);
      auto frame = protocol::MakeFrame(u);
      auto t0 = Clock::now();
      for (auto& e : edges) (void)e->client->SendFrame(frame);
      all_ok = wait_all(r + 1, static_cast<uint64_t>(r + 1));
      total += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    return total / count;
  };
  const double clean_s = run_rounds(rounds);

  // The non-reader, behind a proxy that stops reading from the aggregator once it has joined.
  auto slow_ctx = protocol::ClientContext::Create(1);
  testing::TcpProxy proxy(port, 4096);
  std::atomic<int> slow_globals{0};
  auto slow = protocol::Client::Connect(
      bench::ClientFor(g_certs, proxy.port(), "slow", slow_ctx),
      [&](protocol::Message m) {
        if (std::holds_alternative<protocol::GlobalLink>(m)) ++slow_globals;
      },
      nullptr);
  if (!slow.ok()) return 1;
  (void)(*slow)->Send(HelloFor("big", big));
  while (slow_globals.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  proxy.SetMode(testing::TcpProxy::Mode::kStallDown);
  for (int i = 0; i < 24; ++i) (void)(*slow)->Send(HelloFor("big", big));
  // The flooder.
  auto flood = protocol::Client::Connect(
      bench::ClientFor(g_certs, port, "flood", slow_ctx), [](protocol::Message) {}, nullptr);
  if (!flood.ok()) return 1;
  (void)(*flood)->Send(HelloFor("big", big));
  std::atomic<bool> stop{false};
  std::atomic<long> flood_sent{0};
  std::thread flooder([&] {
    protocol::Update f;
    f.link_id = "big";
    f.base_round = 99;
    f.delta.assign(n_big, 0.5f);
    f.samples = 1;
    f.checksum = protocol::ParamsChecksum(f.delta);
    auto frame = protocol::MakeFrame(f);
    while (!stop.load()) {
      if ((*flood)->SendFrame(frame).ok()) {
        ++flood_sent;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  });
  const double faults_s = run_rounds(rounds);
  // Wait (up to 30 s) for the non-reader to be dropped: the edges and the flooder remain.
  std::string metrics = (*agg)->MetricsText();
  for (int i = 0; i < 300 && Metric(metrics, "mlink_connected_edges") != k + 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    metrics = (*agg)->MetricsText();
  }
  stop = true;
  flooder.join();
  std::printf(
      "{\"bench\":\"load_rounds\",\"edges\":%d,\"rounds\":%d,\"params\":%zu,\"all_acked\":%s,"
      "\"connect_s\":%.1f,"
      "\"round_s_with_slow_reader_and_flooder\":%.3f,\"round_s_clean\":%.3f,\"ratio\":%.2f,"
      "\"slow_reader_dropped\":%s,\"flood_updates_sent\":%ld,\"read_pauses\":%ld}\n",
      k, rounds, n_small, all_ok ? "true" : "false", connect_s, faults_s, clean_s,
      faults_s / clean_s, Metric(metrics, "mlink_connected_edges") == k + 1 ? "true" : "false",
      flood_sent.load(), Metric(metrics, "mlink_read_pauses_total"));
  std::fflush(stdout);
  edges.clear();
  flood->reset();
  proxy.SetMode(testing::TcpProxy::Mode::kForward);
  slow->reset();
  (*agg)->Stop();
  std::filesystem::remove_all(data);
  return all_ok ? 0 : 1;
}
