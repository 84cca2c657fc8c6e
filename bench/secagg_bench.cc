// Secure aggregation cost against the plain round, at K = 10, 100, 1000 edges and d parameters.
// In-process and single-threaded: every edge's client and the server run one after another on
// one core, with no network, so round_ms is the total compute a round adds (the sum over all
// parties), and client_ms / server_ms split it; parallel_ms is one edge's compute plus the
// server's, what the round takes when the edges compute at the same time (no network). Bytes are
// per edge, both directions, as the frames carry them (protocol::Encode for the plain Update and
// GlobalLink; secagg::WireBytes, the payload encoding in a frame, for the secure-aggregation
// messages, plus the same GlobalLink). Plain round: each edge encodes its Update; the server
// decodes and folds each delta into the sum. Secure round (SecAgg with the SecAgg+ Harary graph):
// degree k = 2 ceil(log2 K) (all others when that is >= K - 1), threshold k/2 + 1; `dropout` edges
// share keys and then send no input, so the server rebuilds their mask keys. The bench checks the
// unmasked sum against the plain sum and exits non-zero when they differ by more than the
// fixed-point tolerance.
//   bench_secagg [params=10000] [max_K=1000]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <vector>

#include "mlink/protocol/codec.h"
#include "mlink/protocol/secagg.h"

using namespace mlink;
using namespace mlink::protocol;
using Clock = std::chrono::steady_clock;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Costs {
  double round_ms = 0, client_ms = 0, server_ms = 0;
  double up_bytes = 0, down_bytes = 0;  // per edge
  std::vector<double> sum;
};

std::vector<std::vector<float>> Inputs(uint32_t k, uint32_t d) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<std::vector<float>> x(k, std::vector<float>(d));
  for (auto& v : x)
    for (float& f : v) f = u(rng);
  return x;
}

GlobalLink Broadcast(uint32_t d) {
  GlobalLink g;
  g.link_id = "hog->fullbody";
  g.round = 1;
  g.params.assign(d, 0.5f);
  g.checksum = ParamsChecksum(g.params);
  return g;
}

Costs Plain(const std::vector<std::vector<float>>& x, const std::set<uint32_t>& dropped) {
  Costs c;
  const std::size_t d = x[0].size();
  std::vector<double> sum(d, 0.0);
  std::size_t up = 0;
  for (uint32_t i = 0; i < x.size(); ++i) {
    if (dropped.count(i + 1)) continue;
    auto t0 = Clock::now();
    Update u;
    u.link_id = "hog->fullbody";
    u.base_round = 1;
    u.delta = x[i];
    u.samples = 100;
    u.checksum = ParamsChecksum(u.delta);
    std::vector<uint8_t> frame = Encode(u);
    auto t1 = Clock::now();
    auto m = Decode(frame.data(), frame.size());
    if (!m.ok()) std::abort();
    const auto& delta = std::get<Update>(*m).delta;
    for (std::size_t j = 0; j < d; ++j) sum[j] += delta[j];
    auto t2 = Clock::now();
    c.client_ms += Ms(t1 - t0);
    c.server_ms += Ms(t2 - t1);
    up += frame.size();
  }
  const std::size_t n = x.size() - dropped.size();
  c.round_ms = c.client_ms + c.server_ms;
  c.up_bytes = static_cast<double>(up) / n;
  c.down_bytes = static_cast<double>(Encode(Broadcast(static_cast<uint32_t>(d))).size());
  c.sum = std::move(sum);
  return c;
}

Costs Secure(const std::vector<std::vector<float>>& x, const std::set<uint32_t>& dropped,
             const secagg::Params& params) {
  using namespace secagg;
  Costs c;
  const auto k = static_cast<uint32_t>(x.size());
  const Context ctx{"hog->fullbody", 1};
  const uint32_t min_clients =
      std::max<uint32_t>(params.threshold + 1, k - static_cast<uint32_t>(dropped.size()));
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "bench_secagg: %s\n", s.ToString().c_str());
    std::exit(1);
  };
  Clock::duration client{}, server{};
  std::size_t up = 0, down = 0;
  auto t = Clock::now();
  auto srv = Server::Create(ctx, params, min_clients);
  if (!srv.ok()) fail(srv.status());
  server += Clock::now() - t;
  std::vector<std::unique_ptr<Client>> clients;
  for (uint32_t i = 1; i <= k; ++i) {
    t = Clock::now();
    auto cl = Client::Create(ctx, i);
    if (!cl.ok()) fail(cl.status());
    client += Clock::now() - t;
    up += WireBytes((*cl)->Advertise());
    t = Clock::now();
    Status s = (*srv)->AddAdvertisement((*cl)->Advertise());
    server += Clock::now() - t;
    if (!s.ok()) fail(s);
    clients.push_back(std::move(*cl));
  }
  t = Clock::now();
  auto rosters = (*srv)->CloseAdvertising();
  server += Clock::now() - t;
  if (!rosters.ok()) fail(rosters.status());
  for (auto& cl : clients) {
    const Roster& roster = rosters->at(cl->Advertise().client);
    down += WireBytes(roster);
    t = Clock::now();
    auto sk = cl->Share(roster);
    client += Clock::now() - t;
    if (!sk.ok()) fail(sk.status());
    up += WireBytes(*sk);
    t = Clock::now();
    Status s = (*srv)->AddShareKeys(*sk);
    server += Clock::now() - t;
    if (!s.ok()) fail(s);
  }
  t = Clock::now();
  auto routed = (*srv)->CloseSharing();
  server += Clock::now() - t;
  if (!routed.ok()) fail(routed.status());
  for (uint32_t i = 1; i <= k; ++i) {
    down += WireBytes(routed->at(i));
    if (dropped.count(i)) continue;
    t = Clock::now();
    auto y = clients[i - 1]->Mask(routed->at(i), x[i - 1]);
    client += Clock::now() - t;
    if (!y.ok()) fail(y.status());
    up += WireBytes(*y);
    t = Clock::now();
    Status s = (*srv)->AddMaskedInput(*y);
    server += Clock::now() - t;
    if (!s.ok()) fail(s);
  }
  t = Clock::now();
  auto request = (*srv)->CloseMasking();
  server += Clock::now() - t;
  if (!request.ok()) fail(request.status());
  for (uint32_t i : request->survivors) {
    down += WireBytes(*request);
    t = Clock::now();
    auto r = clients[i - 1]->Unmask(*request);
    client += Clock::now() - t;
    if (!r.ok()) fail(r.status());
    up += WireBytes(*r);
    t = Clock::now();
    Status s = (*srv)->AddUnmaskResponse(*r);
    server += Clock::now() - t;
    if (!s.ok()) fail(s);
  }
  t = Clock::now();
  auto result = (*srv)->Finish();
  server += Clock::now() - t;
  if (!result.ok()) fail(result.status());
  c.client_ms = Ms(client);
  c.server_ms = Ms(server);
  c.round_ms = c.client_ms + c.server_ms;
  // Per edge that took part to the end; dropped edges' first two phases are counted with them.
  const std::size_t n = k - dropped.size();
  c.up_bytes = static_cast<double>(up) / n;
  c.down_bytes = static_cast<double>(down) / n + Encode(Broadcast(params.length)).size();
  c.sum = std::move(result->sum);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  const uint32_t d = argc > 1 ? static_cast<uint32_t>(std::atoi(argv[1])) : 10000;
  const uint32_t max_k = argc > 2 ? static_cast<uint32_t>(std::atoi(argv[2])) : 1000;
  int failures = 0;
  for (uint32_t k : {10u, 100u, 1000u}) {
    if (k > max_k) break;
    const auto x = Inputs(k, d);
    uint32_t degree = 2 * static_cast<uint32_t>(std::ceil(std::log2(k)));
    if (degree >= k - 1) degree = 0;
    secagg::Params params;
    params.degree = degree;
    params.threshold = (degree == 0 ? k - 1 : degree) / 2 + 1;
    params.graph_seed = 99;
    params.frac_bits = 16;
    params.clip = 16.0;
    params.length = d;
    for (double dropout : {0.0, 0.1}) {
      std::set<uint32_t> dropped;
      for (uint32_t i = 1; i <= k && dropped.size() < static_cast<std::size_t>(dropout * k);
           i += 10)
        dropped.insert(i);
      const int reps = k <= 10 ? 5 : 1;
      Costs plain, secure;
      for (int r = 0; r < reps; ++r) {  // keep the fastest repetition of each
        Costs p = Plain(x, dropped), s = Secure(x, dropped, params);
        if (r == 0 || p.round_ms < plain.round_ms) plain = std::move(p);
        if (r == 0 || s.round_ms < secure.round_ms) secure = std::move(s);
      }
      double max_err = 0;
      for (uint32_t j = 0; j < d; ++j)
        max_err = std::max(max_err, std::fabs(secure.sum[j] - plain.sum[j]));
      const double tolerance = (k - dropped.size()) * std::ldexp(1.0, -17) + 1e-9;
      const bool ok = max_err <= tolerance;
      failures += ok ? 0 : 1;
      const double n = static_cast<double>(k - dropped.size());
      const double plain_parallel = plain.client_ms / n + plain.server_ms;
      const double secure_parallel = secure.client_ms / n + secure.server_ms;
      std::printf(
          "{\"bench\":\"secagg_round\",\"mode\":\"in-process, one thread, no "
          "network\",\"edges\":%u,"
          "\"params\":%u,\"degree\":%u,\"threshold\":%u,\"dropped\":%zu,\"ok\":%s,\"max_abs_"
          "error\":%.3g,"
          "\"plain_round_ms\":%.2f,\"secagg_round_ms\":%.2f,\"round_ratio\":%.1f,"
          "\"plain_parallel_ms\":%.3f,\"secagg_parallel_ms\":%.3f,\"parallel_ratio\":%.1f,"
          "\"secagg_client_ms_per_edge\":%.3f,\"secagg_server_ms\":%.2f,\"plain_server_ms\":%.2f,"
          "\"plain_bytes_per_edge\":%.0f,\"secagg_bytes_per_edge\":%.0f,\"bytes_ratio\":%.3f,"
          "\"secagg_up_bytes_per_edge\":%.0f,\"secagg_down_bytes_per_edge\":%.0f}\n",
          k, d, degree == 0 ? k - 1 : degree, params.threshold, dropped.size(),
          ok ? "true" : "false", max_err, plain.round_ms, secure.round_ms,
          secure.round_ms / plain.round_ms, plain_parallel, secure_parallel,
          secure_parallel / plain_parallel, secure.client_ms / (k - dropped.size()),
          secure.server_ms, plain.server_ms, plain.up_bytes + plain.down_bytes,
          secure.up_bytes + secure.down_bytes,
          (secure.up_bytes + secure.down_bytes) / (plain.up_bytes + plain.down_bytes),
          secure.up_bytes, secure.down_bytes);
      std::fflush(stdout);
    }
  }
  return failures == 0 ? 0 : 1;
}
