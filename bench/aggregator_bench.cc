// Aggregator rounds on loopback over real mutual TLS: K edges (10, 100, 1000) each upload a
// delta of d parameters (1k, 10k, 100k, 1M); reported per case: round latency (first upload
// sent -> every edge holds the next global link), updates per second, the aggregator's peak growth
// of resident memory during the round (rss_growth_mib; the edges run in a child process, whose own
// growth is edges_rss_growth_mib) against K*d*4 bytes (what keeping every update would cost), and
// the aggregation throughput (delta bytes per second end to end) against a plain memory-bandwidth
// loop over the same bytes measured in this run. Then 10,000 idle edges from a second process are held while a
// 10-edge round still completes. One JSON line per case. The aggregator's read budget (received
// updates not yet folded) is read_budget_mib (default: the aggregator's default, 64 MiB).
//   bench_aggregator [max_K] [max_d] [idle_edges] [read_budget_mib]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>

#include "bench_support.h"
#include "mlink/cloud/aggregator.h"
#include "mlink/common/log.h"
#include "mlink/protocol/transport.h"

using namespace mlink;
using bench::Counter;
using Clock = std::chrono::steady_clock;

namespace {

std::string g_certs;
std::size_t g_read_budget = cloud::CloudOptions().read_budget_bytes;

double Secs(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

long RssKiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return 0;
}

// A vec2vec spec with about d parameters: s*h + h + h*t + t with h = 2t.
link::LinkSpec SpecFor(long d) {
  int t = d <= 2000 ? 10 : d <= 20000 ? 30 : d <= 200000 ? 100 : 300;
  long s = std::max<long>(1, (d - 2 * t - 2L * t * t - t) / (2 * t));
  return bench::RegressionSpec(static_cast<int>(s), t);
}

cloud::CloudOptions Options(const std::string& data, const link::LinkSpec& spec, int k) {
  cloud::CloudOptions o = bench::BenchCloudOptions(g_certs, data);
  o.read_budget_bytes = g_read_budget;
  cloud::LinkOptions l;
  l.id = "bench";
  l.spec = spec;
  l.min_edges = k;
  l.quorum = k;
  l.round_deadline_s = 600;
  o.links.push_back(l);
  return o;
}

// Peak growth of this process's resident memory from construction to Stop, sampled every 5 ms.
class PeakRss {
 public:
  PeakRss() : base_(RssKiB()), peak_(base_), thread_([this] {
    while (!stop_.load()) {
      peak_ = std::max(peak_.load(), RssKiB());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }) {}
  double StopMiB() {
    stop_ = true;
    thread_.join();
    peak_ = std::max(peak_.load(), RssKiB());
    return (peak_.load() - base_) / 1024.0;
  }

 private:
  long base_;
  std::atomic<long> peak_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

template <typename T>
void Put(int fd, const T& v) {
  if (write(fd, &v, sizeof(v)) != static_cast<ssize_t>(sizeof(v))) _exit(1);
}
template <typename T>
T Get(int fd) {
  T v{};
  if (read(fd, &v, sizeof(v)) != static_cast<ssize_t>(sizeof(v))) std::exit(1);
  return v;
}

struct EdgesResult {
  int ok = 0;
  double latency_s = 0;
  double rss_growth_mib = 0;
};

// The child process of a round: k edges that join, wait for "go", upload one delta each and wait
// for every next global link. Reports through `out`.
void RunEdges(int in, int out, int k, const link::LinkSpec& spec) {
  const auto port = Get<uint16_t>(in);
  const auto n = Get<std::size_t>(in);
  auto ctx = protocol::ClientContext::Create(1);
  Counter globals;
  std::vector<std::unique_ptr<protocol::Client>> clients;
  for (int i = 0; i < k; ++i) {
    auto c = protocol::Client::Connect(
        bench::ClientFor(g_certs, port, "e" + std::to_string(i), ctx),
        [&](protocol::Message m) {
          if (std::holds_alternative<protocol::GlobalLink>(m)) globals.Add();
        },
        nullptr);
    if (!c.ok()) {
      std::fprintf(stderr, "edge %d: %s\n", i, c.status().ToString().c_str());
      _exit(1);
    }
    protocol::Hello h;
    h.protocol_version = protocol::kProtocolVersion;
    h.links.push_back({"bench", spec.Hash()});
    (void)(*c)->Send(h);
    clients.push_back(std::move(c).value());
  }
  globals.WaitFor(k, 120);
  protocol::Update u;
  u.link_id = "bench";
  u.base_round = 0;
  u.delta.assign(n, 0.001f);
  u.samples = 1;
  u.checksum = protocol::ParamsChecksum(u.delta);
  auto frame = protocol::MakeFrame(u);  // one encoded buffer shared by every edge
  u.delta.clear();
  u.delta.shrink_to_fit();
  Put(out, char{'r'});
  (void)Get<char>(in);
  PeakRss peak;
  auto t0 = Clock::now();
  for (auto& c : clients) (void)c->SendFrame(frame);
  EdgesResult r;
  r.ok = globals.WaitFor(2 * k, 600) ? 1 : 0;
  r.latency_s = Secs(t0);
  r.rss_growth_mib = peak.StopMiB();
  Put(out, r);
  clients.clear();
  ctx.reset();
}

// One round with k edges and a d-parameter link. The edges run in a child process, so this
// process's memory is the aggregator's alone.
void Round(int k, long d) {
  link::LinkSpec spec = SpecFor(d);
  int down[2], up[2];
  if (pipe(down) != 0 || pipe(up) != 0) std::exit(1);
  std::fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    close(down[1]);
    close(up[0]);
    RunEdges(down[0], up[1], k, spec);
    _exit(0);
  }
  close(down[0]);
  close(up[1]);
  std::string data = "/tmp/mlink-bench-agg-" + std::to_string(::getpid());
  std::filesystem::remove_all(data);
  auto agg = cloud::Aggregator::Start(Options(data, spec, k));
  if (!agg.ok()) {
    std::fprintf(stderr, "%s\n", agg.status().ToString().c_str());
    kill(child, SIGKILL);
    std::exit(1);
  }
  const std::size_t n = (*agg)->GetLink("bench")->params.size();
  Put(down[1], (*agg)->port());
  Put(down[1], n);
  (void)Get<char>(up[0]);  // every edge joined
  PeakRss peak;
  Put(down[1], char{'g'});
  const auto r = Get<EdgesResult>(up[0]);
  const double agg_growth = peak.StopMiB();
  waitpid(child, nullptr, 0);
  close(down[1]);
  close(up[0]);

  // Baseline: a plain read-and-sum over the same bytes (K deltas of n floats) in memory.
  std::vector<float> buf(n, 0.001f);
  std::vector<double> sum(n, 0.0);
  auto t1 = Clock::now();
  for (int i = 0; i < k; ++i) {
    for (std::size_t j = 0; j < n; ++j) sum[j] += buf[j];
  }
  double loop_s = Secs(t1);
  double bytes = static_cast<double>(k) * n * sizeof(float);
  const double latency = r.latency_s;
  std::printf("{\"bench\":\"aggregator_round\",\"edges\":%d,\"params\":%zu,\"ok\":%s,\"round_latency_s\":%.3f,"
              "\"updates_per_s\":%.1f,\"rss_growth_mib\":%.1f,\"edges_rss_growth_mib\":%.1f,\"all_updates_mib\":%.1f,"
              "\"read_budget_mib\":%.0f,\"ours_throughput_mib_s\":%.1f,\"memory_loop_mib_s\":%.1f,"
              "\"ratio_vs_memory_loop\":%.4f}\n",
              k, n, r.ok ? "true" : "false", latency, k / latency, agg_growth, r.rss_growth_mib, bytes / (1 << 20),
              static_cast<double>(g_read_budget) / (1 << 20), bytes / (1 << 20) / latency, bytes / (1 << 20) / loop_s,
              loop_s / latency);
  std::fflush(stdout);
  (*agg)->Stop();
  std::filesystem::remove_all(data);
}

void IdleEdges(int idle) {
  std::string data = "/tmp/mlink-bench-idle-" + std::to_string(::getpid());
  std::filesystem::remove_all(data);
  link::LinkSpec spec = SpecFor(1000);
  auto agg = cloud::Aggregator::Start(Options(data, spec, 10));
  if (!agg.ok()) std::exit(1);
  uint16_t port = (*agg)->port();
  int pipefd[2];
  if (pipe(pipefd) != 0) std::exit(1);
  pid_t child = fork();
  if (child == 0) {  // the idle edges live in their own process (file descriptor limits)
    close(pipefd[0]);
    auto ctx = protocol::ClientContext::Create(2);
    std::vector<std::unique_ptr<protocol::Client>> held;
    for (int i = 0; i < idle; ++i) {
      auto c =
          protocol::Client::Connect(bench::ClientFor(g_certs, port, "e0", ctx), nullptr, nullptr);
      if (!c.ok()) break;
      held.push_back(std::move(c).value());
    }
    int count = static_cast<int>(held.size());
    (void)!write(pipefd[1], &count, sizeof(count));
    pause();
    _exit(0);
  }
  close(pipefd[1]);
  auto t0 = Clock::now();
  int connected = 0;
  (void)!read(pipefd[0], &connected, sizeof(connected));
  double connect_s = Secs(t0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::size_t held = static_cast<std::size_t>(connected);
  // A 10-edge round while they are all connected.
  auto ctx = protocol::ClientContext::Create(1);
  Counter globals;
  std::vector<std::unique_ptr<protocol::Client>> clients;
  for (int i = 1; i <= 10; ++i) {
    auto c = protocol::Client::Connect(
        bench::ClientFor(g_certs, port, "e" + std::to_string(i), ctx),
        [&](protocol::Message m) {
          if (std::holds_alternative<protocol::GlobalLink>(m)) globals.Add();
        },
        nullptr);
    if (!c.ok()) break;
    protocol::Hello h;
    h.protocol_version = protocol::kProtocolVersion;
    h.links.push_back({"bench", spec.Hash()});
    (void)(*c)->Send(h);
    clients.push_back(std::move(c).value());
  }
  globals.WaitFor(10, 60);
  protocol::Update u;
  u.link_id = "bench";
  u.delta.assign((*agg)->GetLink("bench")->params.size(), 0.5f);
  u.samples = 1;
  u.checksum = protocol::ParamsChecksum(u.delta);
  auto t1 = Clock::now();
  for (auto& c : clients) (void)c->Send(u);
  bool ok = globals.WaitFor(20, 60);
  double round_s = Secs(t1);
  std::printf("{\"bench\":\"aggregator_idle_edges\",\"idle_edges_requested\":%d,\"idle_edges_held\":%zu,"
              "\"connect_s\":%.1f,\"round_with_idle_ok\":%s,\"round_latency_s\":%.3f}\n",
              idle, held, connect_s, ok ? "true" : "false", round_s);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  clients.clear();
  (*agg)->Stop();
  std::filesystem::remove_all(data);
}

}  // namespace

int main(int argc, char** argv) {
  const int max_k = argc > 1 ? std::atoi(argv[1]) : 1000;
  const long max_d = argc > 2 ? std::atol(argv[2]) : 1000000;
  const int idle = argc > 3 ? std::atoi(argv[3]) : 10000;
  if (argc > 4) g_read_budget = static_cast<std::size_t>(std::atol(argv[4])) << 20;
  bench::RaiseFileLimit();
  log::SetLevel(log::Level::kWarn);
  g_certs = std::string(MLINK_BUILD_DIR) + "/bench-certs";
  if (!bench::EnsureEdgeCerts(g_certs, max_k, "bench_aggregator")) return 1;
  for (int k : {10, 100, 1000}) {
    for (long d : {1000L, 10000L, 100000L, 1000000L}) {
      if (k > max_k || d > max_d) continue;
      if (static_cast<double>(k) * d > 2e8) continue;  // 800 MB of deltas per round: skipped here
      Round(k, d);
    }
  }
  if (idle > 0) IdleEdges(idle);
  return 0;
}
