// Internal: the statistics behind the status page. The aggregator reports events at the points
// where they already happen (a connection opens or closes, an update is received, accepted or
// refused, a round opens or closes); each call takes one short lock and does O(1) work (a site or
// link lookup), and Snapshot() copies the state under the same lock. Thread-safe.
//
// Memory is bounded: the last `rounds_kept` rounds per link, one entry per site identity (sites
// are certificate subjects of the deployment CA, so their number is the deployment's).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "mlink/cloud/options.h"
#include "status_page.h"

namespace mlink::cloud {

class StatusBoard {
 public:
  struct Options {
    std::size_t rounds_kept = 200;  // per link
    std::function<double()> clock;  // unix seconds; empty = the system clock
  };
  StatusBoard();
  explicit StatusBoard(Options options);

  // A configured link; `history` holds its closed rounds from the store, oldest first (the newest
  // `rounds_kept` are kept). Call before its first RoundOpened.
  void AddLink(const LinkOptions& link, const std::vector<StatusSnapshot::Round>& history);
  void RoundOpened(const std::string& link, uint64_t round);
  void RoundClosed(const std::string& link, uint64_t round, double duration_s);

  void SiteConnected(const std::string& identity, const std::string& address);
  void SiteDisconnected(const std::string& identity);

  // An update from `identity` for `link`, before validation; then exactly one of the two below.
  void UpdateReceived(const std::string& identity, const std::string& link);
  void UpdateAccepted(const std::string& identity, const std::string& link, uint64_t samples,
                      double metric);
  // Anything refused: an update (link named), a Hello or a bad frame (`link` empty or unknown).
  void Rejected(const std::string& identity, const std::string& link, const std::string& reason);
  // An update of the open round reloaded from the store after a restart (no site counted).
  void UpdateRecovered(const std::string& link, uint64_t samples, double metric);

  StatusSnapshot Snapshot() const;

 private:
  struct RoundState {
    StatusSnapshot::Round round;
    // The metric's running sums: sample-weighted, and plain for rounds whose updates carry no
    // samples. Non-finite metrics are left out.
    double weighted_sum = 0;
    double plain_sum = 0;
    uint64_t metric_samples = 0;
    uint64_t metric_count = 0;
    void Finish();  // sets round.metric / has_metric from the sums
  };
  struct LinkState {
    StatusSnapshot::Link info;      // everything but `rounds`
    std::deque<RoundState> rounds;  // oldest first
  };
  double Now() const;
  RoundState* OpenRound(const std::string& link);           // REQUIRES(mu_)
  StatusSnapshot::Site& Site(const std::string& identity);  // REQUIRES(mu_)

  Options options_;
  double started_at_ = 0;
  mutable std::mutex mu_;
  std::map<std::string, LinkState> links_;              // GUARDED_BY(mu_)
  std::map<std::string, StatusSnapshot::Site> sites_;   // GUARDED_BY(mu_)
  std::map<std::string, uint64_t> rejected_by_reason_;  // GUARDED_BY(mu_)
};

}  // namespace mlink::cloud
