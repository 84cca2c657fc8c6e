// The status page's cost to the aggregator. (1) Per event: a StatusBoard update (what the worker
// thread pays per accepted update) against the counter the aggregator already kept for /metrics
// (a mutex and a map increment), measured in this run. (2) Per page view: how long the board's
// lock is held (Snapshot) against the whole page render (snapshot + HTML), for L links with a
// full 200-round history and S sites; the lock is the only thing rounds could wait for.
// One JSON line each.
//   bench_status_page [links] [sites]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "status_board.h"
#include "status_page.h"

using namespace mlink::cloud;
using Clock = std::chrono::steady_clock;

namespace {

double Secs(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

volatile uint64_t g_sink = 0;

}  // namespace

int main(int argc, char** argv) {
  const int links = argc > 1 ? std::atoi(argv[1]) : 4;
  const int sites = argc > 2 ? std::atoi(argv[2]) : 100;
  StatusBoard board;
  for (int l = 0; l < links; ++l) {
    LinkOptions o;
    o.id = "link-" + std::to_string(l);
    board.AddLink(o, {});
    board.RoundOpened(o.id, 0);
  }
  std::vector<std::string> names;
  for (int s = 0; s < sites; ++s) {
    names.push_back("site-" + std::to_string(s));
    board.SiteConnected(names.back(), "10.0.0." + std::to_string(s % 250) + ":40000");
  }

  // (1) per event
  const int kEvents = 1000000;
  auto t0 = Clock::now();
  for (int i = 0; i < kEvents; ++i) {
    const std::string& site = names[i % sites];
    board.UpdateAccepted(site, "link-" + std::to_string(i % links), 100, 0.5);
  }
  double ours = Secs(t0) / kEvents;
  std::mutex mu;
  std::map<std::string, uint64_t> accepted;
  t0 = Clock::now();
  for (int i = 0; i < kEvents; ++i) {
    std::lock_guard<std::mutex> lock(mu);
    ++accepted["link-" + std::to_string(i % links)];
  }
  double base = Secs(t0) / kEvents;
  g_sink = g_sink + accepted.size();
  std::printf(
      "{\"bench\":\"status_board_event\",\"events\":%d,\"ours_ns\":%.1f,\"baseline\":\"metrics "
      "counter "
      "(mutex + map increment)\",\"baseline_ns\":%.1f,\"ratio\":%.2f}\n",
      kEvents, ours * 1e9, base * 1e9, ours / base);

  // (2) per page view, with a full history: 200 closed rounds per link, a few rejections each
  for (int r = 0; r < 200; ++r) {
    for (int l = 0; l < links; ++l) {
      std::string id = "link-" + std::to_string(l);
      board.Rejected(names[r % sites], id, r % 2 ? "duplicate" : "round_not_open");
      board.RoundClosed(id, static_cast<uint64_t>(r), 1.5);
      board.RoundOpened(id, static_cast<uint64_t>(r + 1));
    }
  }
  const int kViews = 200;
  double lock_s = 0, html_s = 0, json_s = 0;
  std::size_t html_bytes = 0, json_bytes = 0;
  for (int v = 0; v < kViews; ++v) {
    auto a = Clock::now();
    StatusSnapshot s = board.Snapshot();
    lock_s += Secs(a);
    auto b = Clock::now();
    std::string html = RenderStatusHtml(s);
    html_s += Secs(b);
    auto c = Clock::now();
    std::string json = RenderStatusJson(s);
    json_s += Secs(c);
    html_bytes = html.size();
    json_bytes = json.size();
  }
  std::printf(
      "{\"bench\":\"status_page_view\",\"links\":%d,\"rounds_per_link\":200,\"sites\":%d,\"views\":"
      "%d,"
      "\"snapshot_under_lock_us\":%.1f,\"render_html_us\":%.1f,\"render_json_us\":%.1f,\"html_"
      "bytes\":%zu,"
      "\"json_bytes\":%zu,\"ratio_lock_to_page\":%.3f}\n",
      links, sites, kViews, lock_s / kViews * 1e6, html_s / kViews * 1e6, json_s / kViews * 1e6,
      html_bytes, json_bytes, lock_s / (lock_s + html_s));
  return 0;
}
