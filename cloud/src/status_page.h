// Internal: the aggregator's status page. A StatusSnapshot is a plain copy of what the page shows
// (taken from the StatusBoard under its lock); rendering it needs no lock and touches no aggregator
// state, so the HTTP thread renders while rounds go on.
//
// The HTML page is self-contained (inline CSS, the metric plot as server-generated inline SVG, a
// meta refresh; no scripts and nothing fetched from elsewhere). Every string that comes from an
// edge or a certificate (identities, addresses, link ids, reasons) is HTML-escaped.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace mlink::cloud {

struct StatusSnapshot {
  struct Site {
    std::string identity;        // certificate subject CN
    std::string address;         // remote ip:port of the newest connection
    int connections = 0;         // open now; 0 = disconnected (kept with its counts)
    double connected_since = 0;  // unix seconds, newest connection
    double last_seen = 0;        // unix seconds, connect or disconnect
    uint64_t updates_sent = 0;   // updates received from it (accepted + rejected)
    uint64_t accepted = 0;
    uint64_t rejected = 0;  // updates and frames refused, Hello refusals included
  };
  struct Round {
    uint64_t round = 0;
    double opened_at = 0;  // unix seconds; 0 = unknown
    double closed_at = 0;  // unix seconds; 0 = still open
    double duration_s = 0;
    uint64_t received = 0;  // updates for this link while the round was open
    uint64_t accepted = 0;
    uint64_t rejected = 0;
    bool rejections_known = true;  // false for rounds loaded from the store (not kept there)
    std::map<std::string, uint64_t> reject_reasons;
    uint64_t samples = 0;  // over the accepted updates
    bool has_metric = false;
    double metric = 0;  // sample-weighted mean of the edges' reported metric
  };
  struct Link {
    std::string id;
    std::string aggregation;  // "mean" or "sample_weighted"
    int min_edges = 0;
    int quorum = 0;
    double deadline_s = 0;
    uint64_t round = 0;             // the open round
    uint64_t rounds_completed = 0;  // closed since this process started
    uint64_t accepted = 0;          // since this process started
    uint64_t rejected = 0;
    std::vector<Round> rounds;  // oldest first; the last one is the open round
  };
  double now = 0;  // unix seconds when the snapshot was taken
  double started_at = 0;
  std::vector<Site> sites;                             // by identity
  std::vector<Link> links;                             // by id
  std::map<std::string, uint64_t> rejected_by_reason;  // everything refused, all links
};

// `&<>"'` as entities; bytes that are not valid UTF-8 or are control characters become U+FFFD.
std::string HtmlEscape(std::string_view text);

// The metric over the closed rounds as an inline <svg> (polyline and points in kPlotColour); a
// short note instead when no closed round has a metric.
std::string RenderMetricPlot(const StatusSnapshot::Link& link, int width = 560, int height = 240);
inline constexpr const char* kPlotColour = "#d62728";

struct StatusPageOptions {
  int refresh_s = 5;               // meta refresh; 0 = none
  std::size_t rounds_listed = 20;  // most recent rounds in each link's table (the plot shows all)
};
std::string RenderStatusHtml(const StatusSnapshot& snapshot, const StatusPageOptions& options = {});
std::string RenderStatusJson(const StatusSnapshot& snapshot);

}  // namespace mlink::cloud
