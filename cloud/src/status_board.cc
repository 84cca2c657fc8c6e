#include "status_board.h"

#include <chrono>
#include <cmath>

namespace mlink::cloud {

StatusBoard::StatusBoard() : StatusBoard(Options{}) {}

StatusBoard::StatusBoard(Options options) : options_(std::move(options)) {
  if (options_.rounds_kept == 0) options_.rounds_kept = 1;
  started_at_ = Now();
}

double StatusBoard::Now() const {
  if (options_.clock) return options_.clock();
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void StatusBoard::RoundState::Finish() {
  if (metric_count == 0) return;
  round.has_metric = true;
  round.metric = metric_samples > 0 ? weighted_sum / static_cast<double>(metric_samples)
                                    : plain_sum / static_cast<double>(metric_count);
}

StatusBoard::RoundState* StatusBoard::OpenRound(const std::string& link) {
  auto it = links_.find(link);
  if (it == links_.end() || it->second.rounds.empty()) return nullptr;
  RoundState& r = it->second.rounds.back();
  return r.round.closed_at == 0 ? &r : nullptr;
}

StatusSnapshot::Site& StatusBoard::Site(const std::string& identity) {
  auto& s = sites_[identity];
  s.identity = identity;
  return s;
}

void StatusBoard::AddLink(const LinkOptions& link,
                          const std::vector<StatusSnapshot::Round>& history) {
  std::lock_guard<std::mutex> lock(mu_);
  LinkState& l = links_[link.id];
  l.info.id = link.id;
  l.info.aggregation = link.aggregation;
  l.info.min_edges = link.min_edges;
  l.info.quorum = link.quorum;
  l.info.deadline_s = link.round_deadline_s;
  l.rounds.clear();
  std::size_t first =
      history.size() > options_.rounds_kept ? history.size() - options_.rounds_kept : 0;
  for (std::size_t i = first; i < history.size(); ++i) {
    RoundState r;
    r.round = history[i];
    l.rounds.push_back(std::move(r));
  }
}

void StatusBoard::RoundOpened(const std::string& link, uint64_t round) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = links_.find(link);
  if (it == links_.end()) return;
  LinkState& l = it->second;
  l.info.round = round;
  if (!l.rounds.empty() && l.rounds.back().round.round == round &&
      l.rounds.back().round.closed_at == 0)
    return;
  RoundState r;
  r.round.round = round;
  r.round.opened_at = Now();
  l.rounds.push_back(std::move(r));
  while (l.rounds.size() > options_.rounds_kept) l.rounds.pop_front();
}

void StatusBoard::RoundClosed(const std::string& link, uint64_t round, double duration_s) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = links_.find(link);
  if (it == links_.end()) return;
  ++it->second.info.rounds_completed;
  RoundState* r = OpenRound(link);
  if (!r || r->round.round != round) return;
  r->round.closed_at = Now();
  r->round.duration_s = duration_s;
  r->Finish();
}

void StatusBoard::SiteConnected(const std::string& identity, const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& s = Site(identity);
  ++s.connections;
  s.address = address;
  s.connected_since = s.last_seen = Now();
}

void StatusBoard::SiteDisconnected(const std::string& identity) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& s = Site(identity);
  if (s.connections > 0) --s.connections;
  s.last_seen = Now();
}

void StatusBoard::UpdateReceived(const std::string& identity, const std::string& link) {
  std::lock_guard<std::mutex> lock(mu_);
  ++Site(identity).updates_sent;
  if (RoundState* r = OpenRound(link)) ++r->round.received;
}

void StatusBoard::UpdateAccepted(const std::string& identity, const std::string& link,
                                 uint64_t samples, double metric) {
  std::lock_guard<std::mutex> lock(mu_);
  ++Site(identity).accepted;
  auto it = links_.find(link);
  if (it != links_.end()) ++it->second.info.accepted;
  if (RoundState* r = OpenRound(link)) {
    ++r->round.accepted;
    r->round.samples += samples;
    if (std::isfinite(metric)) {
      r->weighted_sum += metric * static_cast<double>(samples);
      r->plain_sum += metric;
      r->metric_samples += samples;
      ++r->metric_count;
    }
  }
}

void StatusBoard::UpdateRecovered(const std::string& link, uint64_t samples, double metric) {
  std::lock_guard<std::mutex> lock(mu_);
  if (RoundState* r = OpenRound(link)) {
    ++r->round.received;
    ++r->round.accepted;
    r->round.samples += samples;
    if (std::isfinite(metric)) {
      r->weighted_sum += metric * static_cast<double>(samples);
      r->plain_sum += metric;
      r->metric_samples += samples;
      ++r->metric_count;
    }
  }
}

void StatusBoard::Rejected(const std::string& identity, const std::string& link,
                           const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++Site(identity).rejected;
  ++rejected_by_reason_[reason];
  auto it = links_.find(link);
  if (it != links_.end()) ++it->second.info.rejected;
  if (RoundState* r = OpenRound(link)) {
    ++r->round.rejected;
    ++r->round.reject_reasons[reason];
  }
}

StatusSnapshot StatusBoard::Snapshot() const {
  StatusSnapshot s;
  std::lock_guard<std::mutex> lock(mu_);
  s.now = Now();
  s.started_at = started_at_;
  for (const auto& [id, site] : sites_) s.sites.push_back(site);
  for (const auto& [id, l] : links_) {
    StatusSnapshot::Link out = l.info;
    out.rounds.reserve(l.rounds.size());
    for (RoundState r : l.rounds) {
      if (r.round.closed_at == 0) {
        r.Finish();  // the open round's metric so far
        if (r.round.opened_at > 0) r.round.duration_s = s.now - r.round.opened_at;
      }
      out.rounds.push_back(std::move(r.round));
    }
    s.links.push_back(std::move(out));
  }
  s.rejected_by_reason = rejected_by_reason_;
  return s;
}

}  // namespace mlink::cloud
