#include "mlink/cloud/aggregator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "mlink/common/flat_params.h"
#include "mlink/common/log.h"
#include "mlink/link/link.h"
#include "mlink/protocol/http_server.h"
#include "mlink/protocol/secagg.h"
#include "mlink/protocol/transport.h"
#include "status_board.h"
#include "secagg_round.h"
#include "store.h"
#include "update_guard.h"

namespace mlink::cloud {

using protocol::Message;
using protocol::Peer;
using protocol::RejectReason;
using Clock = std::chrono::steady_clock;

namespace {

// Runs tasks in order on one thread, with wake-ups for deadlines.
class Worker {
 public:
  Worker() : thread_([this] { Loop(); }) {}
  ~Worker() { Stop(); }
  void Post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }
  // `tick` runs on the worker whenever it wakes; it returns the next time it wants to run.
  void SetTick(std::function<Clock::time_point()> tick) {
    Post([this, tick = std::move(tick)]() mutable { tick_ = std::move(tick); });
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    Clock::time_point next = Clock::time_point::max();
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_until(lock, next, [this] { return stop_ || !tasks_.empty(); });
        if (stop_) return;
        if (!tasks_.empty()) {
          task = std::move(tasks_.front());
          tasks_.pop_front();
        }
      }
      if (task) task();
      if (tick_) next = tick_();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // GUARDED_BY(mu_)
  bool stop_ = false;                        // GUARDED_BY(mu_)
  std::function<Clock::time_point()> tick_;  // worker thread only
  std::thread thread_;
};

std::string ReasonLabel(RejectReason r) { return protocol::RejectReasonName(r); }

constexpr int kStatusRoundsKept = 200;  // per link, in memory for the status page

StatusSnapshot::Round HistoryRound(const Store::RoundRecord& h) {
  StatusSnapshot::Round r;
  r.round = h.round;
  r.closed_at = h.closed_at;
  r.duration_s = h.duration_s;
  r.opened_at = h.closed_at - h.duration_s;
  r.received = r.accepted = static_cast<uint64_t>(h.updates);
  r.rejections_known = false;  // the store keeps what was folded, not what was refused
  r.samples = h.samples;
  r.has_metric = h.has_metric;
  r.metric = h.metric;
  return r;
}

}  // namespace

struct Aggregator::Impl : public protocol::ServerHandler {
  struct LinkState {
    LinkOptions options;
    std::string spec_hash_hex;
    uint64_t spec_hash = 0;
    uint64_t round = 0;
    std::vector<float> params;
    std::vector<double> sum;     // running weighted sum of this round's deltas
    double total_weight = 0;
    std::set<std::string> contributors;
    Clock::time_point opened;
    Clock::time_point deadline;
    uint64_t rounds_completed = 0;
    double last_round_s = 0;
    std::unique_ptr<SecAggRound> secagg;  // the open round, on links with secure aggregation
    std::unique_ptr<UpdateGuard> guard;  // clipping, weight cap, central DP
    bool budget_spent = false;           // privacy budget spent: no more rounds open
  };
  struct PeerState {
    std::weak_ptr<Peer> peer;
    std::string identity;
    bool hello = false;
    std::set<std::string> links;
  };

  // A received message with its read-budget charge, released once the message is processed
  // (an update: committed and folded), so the transport reads more.
  struct Inbound {
    std::shared_ptr<Peer> peer;
    Message message;
    protocol::ReadLease lease;
  };
  struct PendingUpdate {
    std::shared_ptr<Peer> peer;
    protocol::Update update;
    protocol::ReadLease lease;
  };

  CloudOptions options;
  std::mutex inbox_mu;
  std::vector<Inbound> inbox;                      // GUARDED_BY(inbox_mu)
  std::unique_ptr<Store> store;                    // worker thread only
  std::map<std::string, LinkState> links;          // worker thread only
  std::unique_ptr<protocol::Server> server;
  std::unique_ptr<protocol::HttpServer> http;
  Worker worker;

  mutable std::mutex peers_mu;
  std::unordered_map<uint64_t, PeerState> peers;   // GUARDED_BY(peers_mu)

  // Counters for /metrics.
  mutable std::mutex stats_mu;
  std::map<std::string, uint64_t> accepted;        // by link, GUARDED_BY(stats_mu)
  std::map<std::string, uint64_t> rejected;        // by reason
  std::map<std::string, uint64_t> rounds_done;     // by link
  std::map<std::string, uint64_t> round_now;       // by link
  std::map<std::string, double> round_seconds;     // by link, last round
  // What the status page shows (its own short lock; rendered on the HTTP thread from a snapshot).
  StatusBoard board;
  std::map<std::string, uint64_t> clipped;         // by link, updates scaled down to clip_norm
  std::map<std::string, dp::Epsilon> dp_spent;     // by link, private links only
  std::map<std::string, bool> dp_budget_spent;     // by link, private links only

  // ---------------------------------------------------------------- transport callbacks (I/O)
  void OnOpen(const std::shared_ptr<Peer>& peer) override {
    std::lock_guard<std::mutex> lock(peers_mu);
    peers[peer->id()] = PeerState{peer, peer->identity(), false, {}};
    board.SiteConnected(peer->identity(), peer->remote());
    MLOG_INFO("cloud", "edge connected").Kv("edge", peer->identity()).Kv("remote", peer->remote());
  }
  // Every message joins one FIFO inbox; the worker drains it in order, committing each run of
  // consecutive updates in one transaction (group commit) before acknowledging them.
  void OnMessage(const std::shared_ptr<Peer>& peer, Message m, protocol::ReadLease lease) override {
    bool first = false;
    {
      std::lock_guard<std::mutex> lock(inbox_mu);
      first = inbox.empty();
      inbox.push_back({peer, std::move(m), std::move(lease)});
    }
    if (first) worker.Post([this] { Drain(); });
  }
  void OnBadFrame(const std::shared_ptr<Peer>& peer, RejectReason reason, const std::string& why) override {
    CountReject(reason);
    board.Rejected(peer->identity(), "", ReasonLabel(reason));
    MLOG_WARN("cloud", "bad frame").Kv("edge", peer->identity()).Kv("reason", ReasonLabel(reason)).Kv("detail", why);
  }
  void OnClose(const std::shared_ptr<Peer>& peer, const std::string& why) override {
    std::lock_guard<std::mutex> lock(peers_mu);
    peers.erase(peer->id());
    board.SiteDisconnected(peer->identity());
    MLOG_INFO("cloud", "edge disconnected").Kv("edge", peer->identity()).Kv("why", why);
  }

  void CountReject(RejectReason r) {
    std::lock_guard<std::mutex> lock(stats_mu);
    ++rejected[ReasonLabel(r)];
  }

  void Refuse(const std::shared_ptr<Peer>& peer, const std::string& link, uint64_t round, RejectReason reason,
              const std::string& text) {
    CountReject(reason);
    board.Rejected(peer->identity(), link, ReasonLabel(reason));
    MLOG_WARN("cloud", "update rejected")
        .Kv("edge", peer->identity())
        .Kv("link", link)
        .Kv("round", round)
        .Kv("reason", ReasonLabel(reason))
        .Kv("detail", text);
    protocol::Reject r;
    r.link_id = link;
    r.round = round;
    r.reason = reason;
    r.text = text;
    peer->Send(r);
  }

  // ---------------------------------------------------------------- worker thread
  void Drain() {
    // At most kMaxBatch messages per transaction, so a burst of large updates is folded and
    // released as it goes; the transport's read budget bounds the bytes queued behind them.
    constexpr std::size_t kMaxBatch = 64;
    std::vector<Inbound> batch;
    bool more = false;
    {
      std::lock_guard<std::mutex> lock(inbox_mu);
      if (inbox.size() <= kMaxBatch) {
        batch.swap(inbox);
      } else {
        batch.assign(std::make_move_iterator(inbox.begin()), std::make_move_iterator(inbox.begin() + kMaxBatch));
        inbox.erase(inbox.begin(), inbox.begin() + kMaxBatch);
        more = true;
      }
    }
    if (more) worker.Post([this] { Drain(); });
    std::vector<PendingUpdate> updates;
    auto flush = [&] {
      if (!updates.empty()) HandleUpdates(&updates);
      updates.clear();
    };
    for (auto& [peer, m, lease] : batch) {
      if (auto* u = std::get_if<protocol::Update>(&m)) {
        updates.push_back({peer, std::move(*u), std::move(lease)});
        continue;
      }
      lease.Release();  // Hello and unexpected messages are small and handled right here
      flush();
      if (auto* hello = std::get_if<protocol::Hello>(&m)) {
        HandleHello(peer, *hello);
        continue;
      }
      if (auto* sa = std::get_if<protocol::SecAgg>(&m)) {
        HandleSecAgg(peer, *sa);
        continue;
      }
      CountReject(RejectReason::kUnknownType);
      board.Rejected(peer->identity(), "", ReasonLabel(RejectReason::kUnknownType));
      protocol::Error e;
      e.reason = RejectReason::kUnknownType;
      e.text = std::string("an edge may send Hello, Update and SecAgg, not ") + protocol::MessageTypeName(protocol::TypeOf(m));
      peer->Send(e);
      peer->Close("unexpected message type");
    }
    flush();
  }

  bool Authorized(const LinkState& l, const std::string& identity) const {
    const auto& allowed = l.options.allowed_edges;
    return allowed.empty() || std::find(allowed.begin(), allowed.end(), identity) != allowed.end();
  }

  protocol::GlobalLink GlobalOf(const std::string& id, const LinkState& l) const {
    protocol::GlobalLink g;
    g.link_id = id;
    g.spec_hash = l.spec_hash;
    g.round = l.round;
    g.params = l.params;
    g.checksum = protocol::ParamsChecksum(l.params);
    return g;
  }

  void HandleHello(const std::shared_ptr<Peer>& peer, const protocol::Hello& h) {
    if (h.protocol_version != protocol::kProtocolVersion) {
      Refuse(peer, "", 0, RejectReason::kVersionMismatch,
             "edge speaks protocol version " + std::to_string(h.protocol_version) + ", this aggregator speaks " +
                 std::to_string(protocol::kProtocolVersion));
      peer->Close("protocol version mismatch");
      return;
    }
    protocol::Welcome w;
    w.protocol_version = protocol::kProtocolVersion;
    w.edge_id = peer->identity();
    std::vector<protocol::GlobalLink> globals;
    std::set<std::string> accepted_links;
    for (const auto& sub : h.links) {
      auto it = links.find(sub.link_id);
      std::string why;
      if (it == links.end()) {
        why = "unknown_link: no link '" + sub.link_id + "' on this aggregator";
      } else if (it->second.spec_hash != sub.spec_hash) {
        why = "spec_mismatch: aggregator's spec hash is " + it->second.spec_hash_hex;
      } else if (!Authorized(it->second, peer->identity())) {
        why = "not_authorized: edge '" + peer->identity() + "' is not allowed for this link";
      }
      if (!why.empty()) {
        w.refused.push_back(sub.link_id);
        w.refused_reasons.push_back(why);
        MLOG_WARN("cloud", "subscription refused").Kv("edge", peer->identity()).Kv("link", sub.link_id).Kv("why", why);
        continue;
      }
      w.accepted.push_back(sub.link_id);
      accepted_links.insert(sub.link_id);
      globals.push_back(GlobalOf(sub.link_id, it->second));
    }
    {
      std::lock_guard<std::mutex> lock(peers_mu);
      auto p = peers.find(peer->id());
      if (p != peers.end()) {
        p->second.hello = true;
        p->second.links = accepted_links;
      }
    }
    peer->Send(w);
    for (const auto& g : globals) peer->Send(g);  // late joiners get the current global link
    MLOG_INFO("cloud", "edge subscribed").Kv("edge", peer->identity()).Kv("links", w.accepted.size()).Kv("refused", w.refused.size());
  }

  // Checks an update against the current state; on success returns the link it is for.
  LinkState* Validate(const std::shared_ptr<Peer>& peer, const protocol::Update& u, std::set<std::string>* batch_keys) {
    bool hello = false, subscribed = false;
    {
      std::lock_guard<std::mutex> lock(peers_mu);
      auto p = peers.find(peer->id());
      if (p != peers.end()) {
        hello = p->second.hello;
        subscribed = p->second.links.count(u.link_id) > 0;
      }
    }
    if (!hello) return Refuse(peer, u.link_id, u.base_round, RejectReason::kNotHello, "send Hello before updates"), nullptr;
    auto it = links.find(u.link_id);
    if (it == links.end()) return Refuse(peer, u.link_id, u.base_round, RejectReason::kUnknownLink, "no such link"), nullptr;
    LinkState& l = it->second;
    const std::string& edge = peer->identity();
    if (!subscribed || !Authorized(l, edge)) {
      Refuse(peer, u.link_id, u.base_round, RejectReason::kNotAuthorized,
             "edge '" + edge + "' is not subscribed to or allowed for this link");
      return nullptr;
    }
    if (l.secagg) {
      Refuse(peer, u.link_id, u.base_round, RejectReason::kSecAgg,
             "link '" + u.link_id + "' uses secure aggregation: send SecAgg messages, not Update");
      return nullptr;
    }
    if (l.budget_spent) {
      Refuse(peer, u.link_id, u.base_round, RejectReason::kRoundNotOpen,
             "no round is open: the link's privacy budget (epsilon " + std::to_string(l.options.privacy.epsilon_budget) +
                 ") is spent");
      return nullptr;
    }
    if (u.base_round != l.round) {
      Refuse(peer, u.link_id, u.base_round, RejectReason::kRoundNotOpen,
             "round " + std::to_string(u.base_round) + " is not open; the open round is " + std::to_string(l.round));
      return nullptr;
    }
    if (u.delta.size() != l.params.size()) {
      Refuse(peer, u.link_id, u.base_round, RejectReason::kWrongShape,
             "delta has " + std::to_string(u.delta.size()) + " values, the link has " + std::to_string(l.params.size()));
      return nullptr;
    }
    for (float v : u.delta) {
      if (!std::isfinite(v)) return Refuse(peer, u.link_id, u.base_round, RejectReason::kNonFinite, "delta contains NaN or Inf"), nullptr;
    }
    if (!std::isfinite(u.loss) || !std::isfinite(u.metric)) {  // SQLite would store NULL and fail the batch
      Refuse(peer, u.link_id, u.base_round, RejectReason::kNonFinite, "loss or metric is NaN or Inf");
      return nullptr;
    }
    if (l.options.aggregation == "sample_weighted" && u.samples == 0) {
      Refuse(peer, u.link_id, u.base_round, RejectReason::kMalformed, "sample-weighted links need samples > 0");
      return nullptr;
    }
    if (l.contributors.count(edge) || !batch_keys->insert(u.link_id + '\n' + edge).second) {
      Refuse(peer, u.link_id, u.base_round, RejectReason::kDuplicate,
             "edge '" + edge + "' already sent its update for round " + std::to_string(l.round));
      return nullptr;
    }
    return &l;
  }

  // Validates, commits (one transaction) and folds a run of updates, acknowledging each only
  // after the commit. Each delta is moved, never copied, and freed with its read-budget charge as
  // soon as it is folded (or refused).
  void HandleUpdates(std::vector<PendingUpdate>* batch) {
    struct Accepted {
      PendingUpdate* pending;
      const protocol::Update* update;
      LinkState* link;
      Store::StoredUpdate stored;
    };
    std::vector<Accepted> ok;
    std::set<std::string> keys;
    for (auto& p : *batch) {
      board.UpdateReceived(p.peer->identity(), p.update.link_id);
      LinkState* l = Validate(p.peer, p.update, &keys);
      if (!l) {
        p.update.delta = {};
        p.lease.Release();
        continue;
      }
      const protocol::Update& u = p.update;
      ok.push_back({&p, &u, l, {p.peer->identity(), u.samples, u.loss, u.metric, std::move(p.update.delta)}});
    }
    if (ok.empty()) return;
    std::vector<Store::PendingRow> rows;
    for (const auto& a : ok) rows.push_back({a.update->link_id, a.link->round, &a.stored});
    Status st = store->InsertUpdates(rows);  // durable before any of them is acknowledged
    if (!st.ok()) {
      MLOG_ERROR("cloud", "cannot store updates").Kv("count", rows.size()).Kv("error", st.message());
      for (const auto& a : ok) {
        Refuse(a.pending->peer, a.update->link_id, a.update->base_round, RejectReason::kInternal,
               "aggregator storage failed; retry later");
      }
      return;
    }
    std::set<std::string> touched;
    for (auto& a : ok) {
      LinkState& l = *a.link;
      const bool was_clipped = Fold(l, a.stored.edge, a.update->samples, &a.stored.delta);
      a.stored.delta = {};
      a.pending->lease.Release();
      touched.insert(a.update->link_id);
      {
        std::lock_guard<std::mutex> lock(stats_mu);
        ++accepted[a.update->link_id];
        if (was_clipped) ++clipped[a.update->link_id];
      }
      board.UpdateAccepted(a.stored.edge, a.update->link_id, a.update->samples, a.update->metric);
      protocol::Ack ack;
      ack.link_id = a.update->link_id;
      ack.round = l.round;
      ack.received = static_cast<uint32_t>(l.contributors.size());
      a.pending->peer->Send(ack);
      MLOG_DEBUG("cloud", "update accepted")
          .Kv("edge", a.stored.edge).Kv("link", a.update->link_id).Kv("round", l.round)
          .Kv("received", l.contributors.size()).Kv("loss", a.update->loss);
    }
    for (const auto& id : touched) {
      LinkState& l = links.at(id);
      MLOG_INFO("cloud", "updates accepted").Kv("link", id).Kv("round", l.round).Kv("received", l.contributors.size())
          .Kv("min_edges", l.options.min_edges);
      if (static_cast<int>(l.contributors.size()) >= l.options.min_edges) CloseRound(id, l);
    }
  }

  // Adds one update to the round's sum, clipped and weighted by the link's guard (the update as
  // stored stays as received; clipping is deterministic, so recovery folds the same values).
  // Returns true if the delta was clipped.
  bool Fold(LinkState& l, const std::string& edge, uint64_t samples, std::vector<float>* delta) {
    const bool was_clipped = l.guard->Clip(delta);
    const double w = l.guard->Weight(samples);
    for (std::size_t i = 0; i < delta->size(); ++i) l.sum[i] += w * static_cast<double>((*delta)[i]);
    l.total_weight += w;
    l.contributors.insert(edge);
    return was_clipped;
  }

  void OpenRound(LinkState& l) {
    std::fill(l.sum.begin(), l.sum.end(), 0.0);
    l.total_weight = 0;
    l.contributors.clear();
    l.opened = Clock::now();
    l.deadline = l.opened + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(l.options.round_deadline_s));
    board.RoundOpened(l.options.id, l.round);
    l.secagg.reset();
    if (l.options.secure_aggregation.enabled) {
      l.secagg = std::make_unique<SecAggRound>(l.options.id, l.round, l.options,
                                               static_cast<uint32_t>(l.params.size() + 1), l.opened);
      l.deadline = Clock::time_point::max();  // the SecAggRound keeps its own deadlines
    }
  }

  // ---------------------------------------------------------------- secure aggregation
  // Only the phases' counts are logged and nothing per edge is stored: the round's running
  // masked sum lives in the SecAggRound, and only the averaged parameters reach SQLite.
  void HandleSecAgg(const std::shared_ptr<Peer>& peer, const protocol::SecAgg& m) {
    bool hello = false, subscribed = false;
    {
      std::lock_guard<std::mutex> lock(peers_mu);
      auto p = peers.find(peer->id());
      if (p != peers.end()) {
        hello = p->second.hello;
        subscribed = p->second.links.count(m.link_id) > 0;
      }
    }
    if (!hello) return Refuse(peer, m.link_id, 0, RejectReason::kNotHello, "send Hello first");
    auto it = links.find(m.link_id);
    if (it == links.end()) return Refuse(peer, m.link_id, 0, RejectReason::kUnknownLink, "no such link");
    LinkState& l = it->second;
    if (!subscribed || !Authorized(l, peer->identity())) {
      return Refuse(peer, m.link_id, l.round, RejectReason::kNotAuthorized,
                    "edge '" + peer->identity() + "' is not subscribed to or allowed for this link");
    }
    if (!l.secagg) {
      return Refuse(peer, m.link_id, l.round, RejectReason::kSecAgg,
                    "link '" + m.link_id + "' does not use secure aggregation: send Update");
    }
    auto parsed = protocol::secagg::Parse(m.payload.data(), m.payload.size());
    if (!parsed.ok()) {
      return Refuse(peer, m.link_id, l.round,
                    parsed.status().code() == StatusCode::kOutOfRange ? RejectReason::kTooLarge : RejectReason::kMalformed,
                    parsed.status().message());
    }
    const auto& ctx = std::visit([](const auto& x) -> const protocol::secagg::Context& { return x.context; }, *parsed);
    if (ctx.link_id != m.link_id || ctx.round != l.round) {
      return Refuse(peer, m.link_id, ctx.round, RejectReason::kRoundNotOpen,
                    "secure-aggregation message for link '" + ctx.link_id + "' round " + std::to_string(ctx.round) +
                        "; the open round is " + std::to_string(l.round));
    }
    std::vector<SecAggRound::Outgoing> out;
    Status st = l.secagg->OnMessage(peer->identity(), std::move(*parsed), Clock::now(), &out);
    if (!st.ok()) Refuse(peer, m.link_id, l.round, RejectReason::kSecAgg, st.message());
    SendSecAgg(m.link_id, &out);
    AfterSecAgg(m.link_id, l);
  }

  void SendSecAgg(const std::string& id, std::vector<SecAggRound::Outgoing>* out) {
    if (out->empty()) return;
    std::map<std::string, std::weak_ptr<Peer>> by_identity;
    {
      std::lock_guard<std::mutex> lock(peers_mu);
      for (const auto& [pid, ps] : peers) {
        if (ps.hello && ps.links.count(id)) by_identity[ps.identity] = ps.peer;
      }
    }
    for (auto& o : *out) {
      auto it = by_identity.find(o.edge);
      if (it == by_identity.end()) continue;  // gone: it counts as dropped
      if (auto p = it->second.lock()) p->Send(protocol::SecAgg{id, protocol::secagg::Serialize(o.message)});
    }
    out->clear();
  }

  // Applies a finished secure-aggregation round (or restarts a failed one).
  void AfterSecAgg(const std::string& id, LinkState& l) {
    if (!l.secagg || l.secagg->state() == SecAggRound::State::kRunning) return;
    Status failure = l.secagg->failure();
    if (l.secagg->state() == SecAggRound::State::kDone) {
      const auto& r = l.secagg->result();
      const std::size_t d = l.params.size();
      const double weight = r.sum.size() == d + 1 ? r.sum[d] : 0.0;
      if (weight > 0) {
        for (std::size_t i = 0; i < d; ++i) l.sum[i] = r.sum[i];
        l.total_weight = weight;
        const auto edges = l.secagg->Edges(r.survivors);
        l.contributors = std::set<std::string>(edges.begin(), edges.end());
        MLOG_INFO("cloud", "secure aggregation: sum unmasked").Kv("link", id).Kv("round", l.round)
            .Kv("inputs", r.survivors.size()).Kv("dropped_after_sharing", r.dropped.size());
        {
          std::lock_guard<std::mutex> lock(stats_mu);
          accepted[id] += r.survivors.size();
        }
        return CloseRound(id, l);  // stores and broadcasts the average; opens the next round
      }
      failure = Status::FailedPrecondition("the survivors' total weight is not positive");
    }
    MLOG_ERROR("cloud", "secure aggregation round failed; the link restarts it as the next round")
        .Kv("link", id).Kv("round", l.round).Kv("error", failure.message());
    CountReject(RejectReason::kSecAgg);
    protocol::Reject reject;
    reject.link_id = id;
    reject.round = l.round;
    reject.reason = RejectReason::kSecAgg;
    reject.text = failure.message();
    std::vector<std::string> told = l.secagg->participants();
    const double secs = std::chrono::duration<double>(Clock::now() - l.opened).count();
    Status st = store->CloseRound(id, l.round, l.params, 0, secs);  // parameters unchanged
    if (!st.ok()) {
      MLOG_ERROR("cloud", "cannot commit round close; will retry").Kv("link", id).Kv("round", l.round).Kv("error", st.message());
      return;
    }
    std::vector<std::weak_ptr<Peer>> targets;
    {
      std::lock_guard<std::mutex> lock(peers_mu);
      for (const auto& [pid, ps] : peers) {
        if (ps.links.count(id) && std::find(told.begin(), told.end(), ps.identity) != told.end()) targets.push_back(ps.peer);
      }
    }
    for (auto& w : targets) {
      if (auto p = w.lock()) p->Send(reject);
    }
    board.RoundClosed(id, l.round, secs);
    ++l.round;
    OpenRound(l);
    {
      std::lock_guard<std::mutex> lock(stats_mu);
      round_now[id] = l.round;
    }
    Broadcast(id, protocol::MakeFrame(GlobalOf(id, l)));
  }

  void CloseRound(const std::string& id, LinkState& l) {
    const std::vector<double>* sum = &l.sum;
    std::vector<double> noised;  // central DP: the noise goes on the sum, before dividing
    if (l.guard->private_link()) {
      noised = l.sum;
      l.guard->AddNoise(l.round, &noised);
      sum = &noised;
    }
    std::vector<float> next(l.params.size());
    for (std::size_t i = 0; i < next.size(); ++i) {
      next[i] = static_cast<float>(static_cast<double>(l.params[i]) + (*sum)[i] / l.total_weight);
    }
    double secs = std::chrono::duration<double>(Clock::now() - l.opened).count();
    int n = static_cast<int>(l.contributors.size());
    Status st = store->CloseRound(id, l.round, next, n, secs);
    if (!st.ok()) {
      MLOG_ERROR("cloud", "cannot commit round close; will retry").Kv("link", id).Kv("round", l.round).Kv("error", st.message());
      return;
    }
    MLOG_INFO("cloud", "round closed").Kv("link", id).Kv("round", l.round).Kv("updates", n).Kv("seconds", secs);
    l.params = std::move(next);
    l.guard->Released();
    ++l.round;
    ++l.rounds_completed;
    l.last_round_s = secs;
    board.RoundClosed(id, l.round - 1, secs);
    CheckPrivacyBudget(id, l);
    OpenRound(l);
    {
      std::lock_guard<std::mutex> lock(stats_mu);
      ++rounds_done[id];
      round_now[id] = l.round;
      round_seconds[id] = secs;
    }
    Broadcast(id, protocol::MakeFrame(GlobalOf(id, l)));
  }

  // Logs and publishes what a private link has spent; marks the link spent once one more round
  // would pass its epsilon budget (its open round then takes no updates).
  void CheckPrivacyBudget(const std::string& id, LinkState& l) {
    if (!l.guard->private_link()) return;
    const dp::Epsilon e = l.guard->Spent();
    l.budget_spent = !l.guard->CanOpenRound();
    MLOG_INFO("cloud", "privacy spent").Kv("link", id).Kv("rounds", l.guard->released()).Kv("epsilon", e.epsilon)
        .Kv("delta", l.options.privacy.delta).Kv("order", e.order).Kv("epsilon_budget", l.options.privacy.epsilon_budget);
    if (l.budget_spent) {
      MLOG_WARN("cloud", "privacy budget spent: this link opens no more rounds").Kv("link", id).Kv("epsilon", e.epsilon)
          .Kv("epsilon_budget", l.options.privacy.epsilon_budget).Kv("next_round_epsilon", l.guard->NextRoundEpsilon().epsilon);
    }
    std::lock_guard<std::mutex> lock(stats_mu);
    dp_spent[id] = e;
    dp_budget_spent[id] = l.budget_spent;
  }

  void Broadcast(const std::string& link, const protocol::Frame& frame) {
    std::vector<std::weak_ptr<Peer>> targets;
    {
      std::lock_guard<std::mutex> lock(peers_mu);
      for (const auto& [pid, ps] : peers) {
        if (ps.links.count(link)) targets.push_back(ps.peer);
      }
    }
    for (auto& w : targets) {
      if (auto p = w.lock()) p->Send(frame);  // one shared immutable buffer for everyone
    }
  }

  Clock::time_point Tick() {
    Clock::time_point next = Clock::time_point::max();
    auto now = Clock::now();
    for (auto& [id, l] : links) {
      if (l.budget_spent) continue;  // no round is open
      if (l.secagg) {
        std::vector<SecAggRound::Outgoing> out;
        l.secagg->Advance(now, &out);
        SendSecAgg(id, &out);
        AfterSecAgg(id, l);
        if (l.secagg) next = std::min(next, l.secagg->deadline());
        continue;
      }
      if (now >= l.deadline) {
        int n = static_cast<int>(l.contributors.size());
        if (n >= l.options.quorum && n > 0) {
          MLOG_INFO("cloud", "round deadline reached with quorum").Kv("link", id).Kv("round", l.round).Kv("updates", n);
          CloseRound(id, l);
        } else {
          if (n > 0) {
            MLOG_WARN("cloud", "round deadline passed below quorum; extending").Kv("link", id).Kv("round", l.round)
                .Kv("updates", n).Kv("quorum", l.options.quorum);
          }
          l.deadline = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(l.options.round_deadline_s));
        }
      }
      next = std::min(next, l.deadline);
    }
    return next;
  }

  Status InitLinks() {
    for (const auto& lo : options.links) {
      MLINK_ASSIGN_OR_RETURN(auto link, link::Link::Create(lo.spec, lo.init_seed));
      FlatParams init = link->GetParams();
      LinkState l;
      l.options = lo;
      l.spec_hash = lo.spec.Hash();
      l.spec_hash_hex = lo.spec.HashHex();
      MLINK_ASSIGN_OR_RETURN(auto stored, store->LoadOrInitLink(lo.id, l.spec_hash_hex, init.data));
      l.round = stored.round;
      l.params = std::move(stored.params);
      l.sum.assign(l.params.size(), 0.0);
      MLINK_ASSIGN_OR_RETURN(auto history, store->History(lo.id, kStatusRoundsKept));
      std::vector<StatusSnapshot::Round> closed;
      for (auto it = history.rbegin(); it != history.rend(); ++it) closed.push_back(HistoryRound(*it));
      board.AddLink(lo, closed);
      l.guard = std::make_unique<UpdateGuard>(lo, l.round);
      CheckPrivacyBudget(lo.id, l);
      OpenRound(l);
      std::size_t recovered = 0;
      MLINK_RETURN_IF_ERROR(store->ForEachUpdate(lo.id, l.round, [&](Store::StoredUpdate u) {
        board.UpdateRecovered(lo.id, u.samples, u.metric);
        Fold(l, u.edge, u.samples, &u.delta);
        ++recovered;
        return Status::Ok();
      }));
      MLOG_INFO("cloud", "link ready").Kv("link", lo.id).Kv("arch", lo.spec.ArchName()).Kv("spec_hash", l.spec_hash_hex)
          .Kv("params", l.params.size()).Kv("round", l.round).Kv("recovered_updates", recovered);
      {
        std::lock_guard<std::mutex> lock(stats_mu);
        round_now[lo.id] = l.round;
        accepted[lo.id] += 0;
        clipped[lo.id] += 0;
        rounds_done[lo.id] += 0;
      }
      auto [it, inserted] = links.emplace(lo.id, std::move(l));
      if (!it->second.budget_spent && static_cast<int>(it->second.contributors.size()) >= it->second.options.min_edges) {
        CloseRound(lo.id, it->second);
      }
    }
    return Status::Ok();
  }

  double PrivacyDelta(const std::string& id) const {
    for (const auto& lo : options.links) {
      if (lo.id == id) return lo.privacy.delta;
    }
    return 0;
  }

  std::string Metrics() const {
    std::ostringstream os;
    std::lock_guard<std::mutex> lock(stats_mu);
    os << "# HELP mlink_rounds_completed_total Federation rounds closed per link.\n# TYPE mlink_rounds_completed_total counter\n";
    for (const auto& [k, v] : rounds_done) os << "mlink_rounds_completed_total{link=\"" << k << "\"} " << v << "\n";
    os << "# HELP mlink_round Open round per link.\n# TYPE mlink_round gauge\n";
    for (const auto& [k, v] : round_now) os << "mlink_round{link=\"" << k << "\"} " << v << "\n";
    os << "# HELP mlink_updates_accepted_total Updates stored and acknowledged.\n# TYPE mlink_updates_accepted_total counter\n";
    for (const auto& [k, v] : accepted) os << "mlink_updates_accepted_total{link=\"" << k << "\"} " << v << "\n";
    os << "# HELP mlink_updates_rejected_total Updates and frames refused, by reason.\n# TYPE mlink_updates_rejected_total counter\n";
    for (const auto& [k, v] : rejected) os << "mlink_updates_rejected_total{reason=\"" << k << "\"} " << v << "\n";
    os << "# HELP mlink_round_duration_seconds Duration of the last closed round.\n# TYPE mlink_round_duration_seconds gauge\n";
    for (const auto& [k, v] : round_seconds) os << "mlink_round_duration_seconds{link=\"" << k << "\"} " << v << "\n";
    os << "# HELP mlink_updates_clipped_total Updates scaled down to the link's clip_norm before averaging.\n"
       << "# TYPE mlink_updates_clipped_total counter\n";
    for (const auto& [k, v] : clipped) os << "mlink_updates_clipped_total{link=\"" << k << "\"} " << v << "\n";
    if (!dp_spent.empty()) {
      os << "# HELP mlink_dp_epsilon Epsilon spent by a private link's rounds (central DP, at mlink_dp_delta).\n"
         << "# TYPE mlink_dp_epsilon gauge\n";
      for (const auto& [k, v] : dp_spent) os << "mlink_dp_epsilon{link=\"" << k << "\"} " << v.epsilon << "\n";
      os << "# HELP mlink_dp_delta The delta the epsilon is reported for.\n# TYPE mlink_dp_delta gauge\n";
      for (const auto& [k, v] : dp_spent) os << "mlink_dp_delta{link=\"" << k << "\"} " << PrivacyDelta(k) << "\n";
      os << "# HELP mlink_dp_budget_spent 1 once a private link opens no more rounds.\n# TYPE mlink_dp_budget_spent gauge\n";
      for (const auto& [k, v] : dp_budget_spent) os << "mlink_dp_budget_spent{link=\"" << k << "\"} " << (v ? 1 : 0) << "\n";
    }
    os << "# HELP mlink_connected_edges Open federation connections.\n# TYPE mlink_connected_edges gauge\n"
       << "mlink_connected_edges " << (server ? server->connections() : 0) << "\n";
    os << "# HELP mlink_bytes_in_total Bytes received in federation messages.\n# TYPE mlink_bytes_in_total counter\n"
       << "mlink_bytes_in_total " << (server ? server->bytes_in() : 0) << "\n";
    os << "# HELP mlink_bytes_out_total Bytes sent in federation messages.\n# TYPE mlink_bytes_out_total counter\n"
       << "mlink_bytes_out_total " << (server ? server->bytes_out() : 0) << "\n";
    os << "# HELP mlink_read_budget_held_bytes Received messages not yet processed (bounded by the read budget).\n"
       << "# TYPE mlink_read_budget_held_bytes gauge\n"
       << "mlink_read_budget_held_bytes " << (server ? server->read_budget_held() : 0) << "\n";
    os << "# HELP mlink_read_budget_bytes The read budget.\n# TYPE mlink_read_budget_bytes gauge\n"
       << "mlink_read_budget_bytes " << options.read_budget_bytes << "\n";
    os << "# HELP mlink_reads_paused Connections whose reads wait for read budget now.\n# TYPE mlink_reads_paused gauge\n"
       << "mlink_reads_paused " << (server ? server->reads_paused() : 0) << "\n";
    os << "# HELP mlink_read_pauses_total Times a connection's reads paused for read budget.\n"
       << "# TYPE mlink_read_pauses_total counter\n"
       << "mlink_read_pauses_total " << (server ? server->read_pauses_total() : 0) << "\n";
    return os.str();
  }
};

Aggregator::Aggregator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Aggregator::~Aggregator() { Stop(); }

Result<std::unique_ptr<Aggregator>> Aggregator::Start(const CloudOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  MLINK_ASSIGN_OR_RETURN(impl->store, Store::Open(options.data_dir));
  // Links load on the worker thread, which owns them from now on.
  std::promise<Status> ready;
  Impl* p = impl.get();
  p->worker.Post([p, &ready] { ready.set_value(p->InitLinks()); });
  Status st = ready.get_future().get();
  if (!st.ok()) return st;
  p->worker.SetTick([p] { return p->Tick(); });

  protocol::ServerOptions so;
  so.host = options.listen_host;
  so.port = static_cast<uint16_t>(options.port);
  so.tls = {options.ca_file, options.cert_file, options.key_file};
  so.handshake_timeout_s = options.handshake_timeout_s;
  so.idle_timeout_s = options.idle_timeout_s;
  so.send_timeout_s = options.send_timeout_s;
  so.io_threads = options.io_threads;
  so.read_budget_bytes = options.read_budget_bytes;
  MLINK_ASSIGN_OR_RETURN(impl->server, protocol::Server::Start(so, p));
  if (options.http_port > 0) {
    auto route = [p](const protocol::HttpRequest& r) -> protocol::HttpResponse {
      if (r.method != "GET") return {405, "text/plain", "only GET is served here\n"};
      if (r.target == "/healthz") return {200, "text/plain", "ok\n"};
      if (r.target == "/metrics") return {200, "text/plain; version=0.0.4", p->Metrics()};
      std::string path = r.target.substr(0, r.target.find('?'));
      if (path == "/" || path == "/status") {
        return {200, "text/html; charset=utf-8", RenderStatusHtml(p->board.Snapshot())};
      }
      if (path == "/status.json") return {200, "application/json", RenderStatusJson(p->board.Snapshot())};
      return {404, "text/plain", "not found; try /, /status.json, /healthz or /metrics\n"};
    };
    MLINK_ASSIGN_OR_RETURN(impl->http, protocol::HttpServer::Start(options.listen_host, static_cast<uint16_t>(options.http_port), route));
  }
  MLOG_INFO("cloud", "aggregator listening")
      .Kv("federation", "wss://" + options.listen_host + ":" + std::to_string(impl->server->port()) + protocol::kFederationPath)
      .Kv("http_port", impl->http ? impl->http->port() : 0)
      .Kv("links", options.links.size());
  return std::unique_ptr<Aggregator>(new Aggregator(std::move(impl)));
}

void Aggregator::Stop() {
  if (!impl_) return;
  if (impl_->http) impl_->http->Stop();
  if (impl_->server) impl_->server->Stop();
  impl_->worker.Stop();
  {
    std::lock_guard<std::mutex> lock(impl_->peers_mu);
    impl_->peers.clear();
  }
}

uint16_t Aggregator::port() const { return impl_->server->port(); }
uint16_t Aggregator::http_port() const { return impl_->http ? impl_->http->port() : 0; }

Result<Aggregator::LinkStatus> Aggregator::GetLink(const std::string& id) const {
  std::promise<Result<LinkStatus>> out;
  Impl* p = impl_.get();
  p->worker.Post([p, &id, &out] {
    auto it = p->links.find(id);
    if (it == p->links.end()) return out.set_value(Status::NotFound("no link '" + id + "'"));
    LinkStatus s{id, it->second.round, it->second.params, it->second.contributors.size(), it->second.rounds_completed};
    out.set_value(s);
  });
  auto fut = out.get_future();
  if (fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    return Status::DeadlineExceeded("aggregator worker did not answer");
  }
  return fut.get();
}

std::string Aggregator::MetricsText() const { return impl_->Metrics(); }

}  // namespace mlink::cloud
