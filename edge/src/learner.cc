#include "mlink/edge/learner.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <variant>

#include "mlink/common/log.h"
#include "mlink/common/sqlite.h"
#include "mlink/protocol/http_server.h"
#include "mlink/protocol/transport.h"
#include "secagg_participant.h"

namespace mlink::edge {

using Clock = std::chrono::steady_clock;

namespace {

const std::vector<std::string> kFederationSchema = {
    "CREATE TABLE pending (link TEXT NOT NULL, round INTEGER NOT NULL, delta BLOB NOT NULL, samples INTEGER NOT NULL,"
    " loss REAL NOT NULL, metric REAL NOT NULL, PRIMARY KEY (link, round));"
    "CREATE TABLE globals (link TEXT PRIMARY KEY, round INTEGER NOT NULL, params BLOB NOT NULL);",
    // Local DP: releases made per link, so the privacy spent survives restarts.
    "CREATE TABLE dp_releases (link TEXT PRIMARY KEY, releases INTEGER NOT NULL);",
};

// Rows [from, to) of a column.
link::Column Range(const link::Column& c, std::size_t from, std::size_t to) {
  std::vector<std::size_t> idx;
  for (std::size_t i = from; i < to; ++i) idx.push_back(i);
  return c.Select(idx);
}

class OracleState : public OracleServing {
 public:
  ModelInfo model;
  std::shared_ptr<const link::Link> local, global;
  std::shared_ptr<const link::Ensemble> fused;
  std::string chosen = "local";

  Result<std::vector<float>> Predict(const ModelOutput& out) const override {
    link::Column c = OneRow(model, out);
    Result<link::Column> r = Status::FailedPrecondition("oracle link not trained");
    if (chosen == "fused" && fused) {
      r = fused->Predict({c, c});
    } else if (chosen == "global" && global) {
      r = global->Predict(c);
    } else if (local) {
      r = local->Predict(c);
    }
    if (!r.ok()) return r.status();
    return r->values;
  }
  std::string choice() const override { return chosen; }
};

struct FrameWork {
  int64_t frame;
  double ts;
  std::vector<ModelOutput> outputs;
  std::vector<bool> ran;
  bool sampled;
};
struct LabelsWork {
  std::vector<Label> labels;
};
struct MessageWork {
  protocol::Message message;
};
struct ConnectedWork {};
using Work = std::variant<FrameWork, LabelsWork, MessageWork, ConnectedWork>;

constexpr std::size_t kMaxQueue = 4096;

}  // namespace

struct Learner::Impl {
  std::string site, data_dir;
  std::vector<ModelInfo> models;
  LearningOptions o;
  std::unique_ptr<SampleStore> store;
  std::unique_ptr<sql::Database> fed_db;

  mutable std::mutex mu;  // guards the queue, the published links and stats
  std::condition_variable cv, idle_cv;
  std::deque<Work> queue;
  bool stopping = false;
  bool busy = false;
  std::shared_ptr<const LinkServing> serving_now;
  std::shared_ptr<const OracleState> oracle_now;
  LearnerStats st;
  std::thread thread;

  // Learner-thread state.
  int64_t new_samples = 0;
  int64_t new_labels = 0;
  std::shared_ptr<const link::Link> oracle_local;  // trained on this site's labels
  int oracle_source = -1;                          // index of the model the oracle link reads
  struct Fed {
    FederatedLink cfg;
    int source = -1, target = -1;  // model indexes (target -1 = oracle)
    std::unique_ptr<link::Link> global;
    uint64_t round = 0;
    bool joined = false;          // an update for `round` was computed (or kept from before)
    int64_t data_at_try = -1;     // local samples when joining last failed for want of samples
    Clock::time_point last_update{};
    // The aggregator could not store this round's update (Reject internal): it stays in
    // federation.db and is sent again at this time.
    std::optional<Clock::time_point> resend_at;
    uint64_t waiting_logged = UINT64_MAX;  // round of the last "not enough samples" line
    std::unique_ptr<SecAggParticipant> secagg = std::make_unique<SecAggParticipant>();
    std::optional<dp::Accountant> privacy;  // local DP links only
    bool budget_logged = false;
  };
  std::vector<Fed> feds;
  std::mt19937_64 rng{1};

  // Federation connection.
  std::mutex client_mu;
  std::unique_ptr<protocol::Client> client;
  std::condition_variable client_cv;
  std::thread conn_thread;
  std::unique_ptr<protocol::HttpServer> http;

  void Push(Work w, bool droppable) {
    std::lock_guard<std::mutex> lock(mu);
    if (stopping) return;
    if (droppable && queue.size() >= kMaxQueue) {
      ++st.dropped;
      return;
    }
    queue.push_back(std::move(w));
    cv.notify_one();
  }

  void Run() {
    while (true) {
      Work w;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return stopping || !queue.empty(); });
        if (queue.empty() && stopping) break;  // drained
        if (queue.empty()) {
          lock.unlock();
          MaybeJoin();  // a round this site waits to join (round_interval_s)
          continue;
        }
        w = std::move(queue.front());
        queue.pop_front();
        busy = true;
      }
      std::visit([&](auto& x) { Handle(x); }, w);
      MaybeRetrain();
      MaybeTrainOracle();
      MaybeJoin();
      std::lock_guard<std::mutex> lock(mu);
      busy = false;
      idle_cv.notify_all();
    }
  }

  void Handle(FrameWork& f) {
    Status s = store->Add(models, f.frame, f.ts, f.outputs, f.ran, f.sampled);
    if (!s.ok()) {
      MLOG_ERROR("edge", "sample store write failed; the frame is not kept").Kv("site", site).Kv("frame", f.frame).Kv("error", s.message());
      return;
    }
    std::lock_guard<std::mutex> lock(mu);
    ++st.recorded;
    if (f.sampled) ++new_samples;
  }

  void Handle(LabelsWork& l) {
    auto r = store->AddLabels(l.labels, o.oracle.dim);
    if (!r.ok()) {
      MLOG_ERROR("edge", "storing labels failed").Kv("site", site).Kv("error", r.status().message());
      return;
    }
    auto line = MLOG_INFO("edge", "labels stored");
    line.Kv("site", site).Kv("stored", r->stored).Kv("not_stored", r->rejected.size());
    if (!r->rejected.empty()) line.Kv("first_problem", r->rejected.front());
    new_labels += r->stored;
    std::lock_guard<std::mutex> lock(mu);
    st.labels = store->LabelCount();
  }

  void Handle(ConnectedWork&) {
    // Nothing to do until the aggregator sends the global links (it does after Welcome).
  }

  void Handle(MessageWork& m) {
    std::visit([&](auto& msg) { OnMessage(msg); }, m.message);
  }

  void OnMessage(protocol::Welcome& w) {
    auto line = MLOG_INFO("edge", "joined the federation");
    line.Kv("site", site).Kv("identity", w.edge_id).Kv("accepted", w.accepted.size());
    for (std::size_t i = 0; i < w.refused.size(); ++i) {
      MLOG_ERROR("edge", "the aggregator refused a link; it is not federated").Kv("site", site).Kv("link", w.refused[i])
          .Kv("reason", i < w.refused_reasons.size() ? w.refused_reasons[i] : "");
    }
  }
  void OnMessage(protocol::Ack& a) {
    DeletePending(a.link_id, a.round);
    std::lock_guard<std::mutex> lock(mu);
    ++st.rounds_joined;
  }
  void OnMessage(protocol::Reject& r) {
    if (r.reason == protocol::RejectReason::kInternal) {
      // Not a verdict on the update: the aggregator failed to store it (e.g. its disk is full).
      for (auto& f : feds) {
        if (f.cfg.id == r.link_id && f.round == r.round) f.resend_at = Clock::now() + Backoff();
      }
      MLOG_WARN("edge", "the aggregator could not store the update; it is kept and sent again").Kv("site", site)
          .Kv("link", r.link_id).Kv("round", r.round).Kv("text", r.text);
      return;
    }
    DeletePending(r.link_id, r.round);
    const bool closed = r.reason == protocol::RejectReason::kRoundNotOpen;
    if (closed) {
      MLOG_WARN("edge", "update dropped: its round closed").Kv("site", site).Kv("link", r.link_id).Kv("round", r.round).Kv("text", r.text);
    } else {
      MLOG_ERROR("edge", "update rejected").Kv("site", site).Kv("link", r.link_id).Kv("round", r.round)
          .Kv("reason", protocol::RejectReasonName(r.reason)).Kv("text", r.text);
    }
    std::lock_guard<std::mutex> lock(mu);
    if (r.reason != protocol::RejectReason::kDuplicate) ++(closed ? st.updates_dropped : st.updates_rejected);
  }
  void OnMessage(protocol::Error& e) {
    MLOG_ERROR("edge", "aggregator reported an error").Kv("site", site).Kv("reason", protocol::RejectReasonName(e.reason)).Kv("text", e.text);
  }
  template <class T>
  void OnMessage(T&) {}

  void OnMessage(protocol::GlobalLink& g) {
    Fed* fed = nullptr;
    for (auto& f : feds) {
      if (f.cfg.id == g.link_id) fed = &f;
    }
    if (!fed) return;
    auto tmpl = link::Link::Create(fed->cfg.spec, 1);
    if (!tmpl.ok()) return;
    FlatParams p = (*tmpl)->GetParams();
    if (p.data.size() != g.params.size() || Fnv1a64(g.params.data(), g.params.size() * sizeof(float)) != g.checksum) {
      MLOG_ERROR("edge", "global link ignored: wrong size or checksum").Kv("site", site).Kv("link", g.link_id)
          .Kv("params", g.params.size()).Kv("expected", p.data.size());
      return;
    }
    p.data = g.params;
    if (!(*tmpl)->SetParams(p).ok()) return;
    fed->global = std::move(tmpl).value();
    fed->round = g.round;
    fed->joined = false;
    {
      auto ins = fed_db->Prepare("INSERT OR REPLACE INTO globals (link, round, params) VALUES (?, ?, ?)");
      if (ins.ok()) (void)ins->Bind(1, g.link_id).Bind(2, static_cast<int64_t>(g.round)).BindBlob(3, g.params.data(), g.params.size() * sizeof(float)).Run();
    }
    MLOG_INFO("edge", "global link received").Kv("site", site).Kv("link", g.link_id).Kv("round", g.round);
    // An update kept from an earlier connection: sent if its round is this one, else dropped.
    fed->resend_at.reset();
    bool have_pending = false;
    for (uint64_t r : PendingRounds(g.link_id)) {
      if (r != g.round) {
        MLOG_WARN("edge", "offline update dropped: its round closed").Kv("site", site).Kv("link", g.link_id).Kv("round", r).Kv("open_round", g.round);
        DeletePending(g.link_id, r);
        std::lock_guard<std::mutex> lock(mu);
        ++st.updates_dropped;
        continue;
      }
      if (auto u = LoadPending(g.link_id, r)) {
        have_pending = true;
        MLOG_INFO("edge", "sending an update kept while offline").Kv("site", site).Kv("link", g.link_id).Kv("round", r);
        SendUpdate(*u);
      }
    }
    fed->joined = have_pending;
    MaybeJoin();  // now, or once round_interval_s has passed since this site's last update
    ChooseServing(*fed);
  }

  int64_t LocalDataCount(const Fed& f) const {
    return f.target < 0 ? store->LabelCount() : store->SampledCount();
  }

  std::vector<uint64_t> PendingRounds(const std::string& link_id) {
    std::vector<uint64_t> rounds;
    auto q = fed_db->Prepare("SELECT round FROM pending WHERE link = ?");
    if (!q.ok()) return rounds;
    q->Bind(1, link_id);
    while (true) {
      auto row = q->Step();
      if (!row.ok() || !*row) break;
      rounds.push_back(static_cast<uint64_t>(q->ColumnInt(0)));
    }
    return rounds;
  }

  std::optional<protocol::Update> LoadPending(const std::string& link_id, uint64_t round) {
    auto q = fed_db->Prepare("SELECT delta, samples, loss, metric FROM pending WHERE link = ? AND round = ?");
    if (!q.ok()) return std::nullopt;
    q->Bind(1, link_id).Bind(2, static_cast<int64_t>(round));
    auto row = q->Step();
    if (!row.ok() || !*row) return std::nullopt;
    protocol::Update u;
    u.link_id = link_id;
    u.base_round = round;
    auto blob = q->ColumnBlob(0);
    u.delta.resize(blob.size() / sizeof(float));
    std::memcpy(u.delta.data(), blob.data(), u.delta.size() * sizeof(float));
    u.samples = static_cast<uint64_t>(q->ColumnInt(1));
    u.loss = q->ColumnDouble(2);
    u.metric = q->ColumnDouble(3);
    u.checksum = Fnv1a64(u.delta.data(), u.delta.size() * sizeof(float));
    return u;
  }

  // The wait before an update the aggregator could not store is sent again.
  std::chrono::steady_clock::duration Backoff() const {
    const double s = std::max(o.federation.backoff_initial_s, std::min(o.federation.backoff_max_s, 1.0));
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
  }

  // A site that had too few samples when the round opened joins it once it has enough; an update
  // the aggregator could not store is sent again.
  void MaybeJoin() {
    for (auto& f : feds) {
      if (f.resend_at && Clock::now() >= *f.resend_at) {
        f.resend_at.reset();
        if (auto u = LoadPending(f.cfg.id, f.round)) {
          MLOG_INFO("edge", "sending a kept update again").Kv("site", site).Kv("link", f.cfg.id).Kv("round", f.round);
          SendUpdate(*u);
        }
      }
    }
    for (auto& f : feds) {
      if (!f.global || f.joined) continue;
      if (Clock::now() - f.last_update < std::chrono::duration<double>(o.federation.round_interval_s)) continue;
      const int64_t have = LocalDataCount(f);
      if (have == f.data_at_try) continue;
      LocalUpdate(f);
    }
  }

  // Local rows of a federated link: (source outputs, target outputs or labels).
  bool LocalRows(const Fed& f, link::Column* x, link::Column* y) {
    if (f.target < 0) {
      auto rows = store->LabelledRows(models[f.source], o.oracle.dim);
      if (!rows.ok()) return false;
      *x = std::move(rows->source);
      *y = std::move(rows->labels);
      return true;
    }
    auto rows = store->Sampled({models[f.source], models[f.target]}, o.train_window);
    if (!rows.ok()) return false;
    *x = std::move(rows->outputs[0]);
    *y = std::move(rows->outputs[1]);
    return true;
  }

  // True (and logged once) when a local-DP link may not release another update.
  bool PrivacyBudgetSpent(Fed& f) {
    if (!f.privacy || f.privacy->CanRelease()) return false;
    if (!f.budget_logged) {
      f.budget_logged = true;
      MLOG_WARN("edge", "privacy budget spent: this site stops uploading the link").Kv("site", site).Kv("link", f.cfg.id)
          .Kv("releases", f.privacy->releases()).Kv("epsilon", f.privacy->Spent().epsilon)
          .Kv("epsilon_budget", f.cfg.privacy.epsilon_budget).Kv("next_epsilon", f.privacy->After(f.privacy->releases() + 1).epsilon);
    }
    return true;
  }

  // Local DP: clips and noises the update in place and records the release, on disk first.
  Status Privatize(Fed& f, protocol::Update* u) {
    f.privacy->Record();
    auto ins = fed_db->Prepare("INSERT OR REPLACE INTO dp_releases (link, releases) VALUES (?, ?)");
    if (!ins.ok()) return ins.status();
    MLINK_RETURN_IF_ERROR(ins->Bind(1, f.cfg.id).Bind(2, static_cast<int64_t>(f.privacy->releases())).Run());
    const double norm = dp::Privatize(f.cfg.privacy, f.round, &u->delta);
    // The loss and metric describe the local data too; a private update does not report them.
    u->loss = 0;
    u->metric = 0;
    const dp::Epsilon e = f.privacy->Spent();
    MLOG_INFO("edge", "privacy spent").Kv("site", site).Kv("link", f.cfg.id).Kv("round", f.round)
        .Kv("releases", f.privacy->releases()).Kv("epsilon", e.epsilon).Kv("delta", f.cfg.privacy.delta)
        .Kv("order", e.order).Kv("norm", norm).Kv("clipped", norm > f.cfg.privacy.clip_norm);
    PublishPrivacy(f);
    return Status::Ok();
  }

  void PublishPrivacy(const Fed& f) {
    if (!f.privacy) return;
    std::lock_guard<std::mutex> lock(mu);
    st.dp_epsilon[f.cfg.id] = f.privacy->Spent().epsilon;
    st.dp_budget_spent[f.cfg.id] = !f.privacy->CanRelease();
  }

  void LocalUpdate(Fed& f) {
    if (PrivacyBudgetSpent(f)) return;
    link::Column x, y;
    if (!LocalRows(f, &x, &y) || static_cast<int>(x.rows()) < o.federation.min_samples) {
      f.data_at_try = LocalDataCount(f);
      if (f.waiting_logged != f.round) {  // once per round; the site joins when it has enough
        f.waiting_logged = f.round;
        MLOG_INFO("edge", "not enough local samples to join this round yet").Kv("site", site).Kv("link", f.cfg.id)
            .Kv("round", f.round).Kv("samples", x.rows()).Kv("needed", o.federation.min_samples);
      }
      return;
    }
    auto local = f.global->Clone();
    link::TrainOptions t;
    t.epochs = o.federation.local_epochs;
    t.seed = o.seed + f.round;
    t.validation_share = 0.2;
    t.restore_best = false;
    auto rep = local->Train(x, y, t);
    if (!rep.ok()) {
      MLOG_ERROR("edge", "local update failed").Kv("site", site).Kv("link", f.cfg.id).Kv("error", rep.status().message());
      return;
    }
    auto delta = Subtract(local->GetParams(), f.global->GetParams());
    if (!delta.ok()) return;
    protocol::Update u;
    u.link_id = f.cfg.id;
    u.base_round = f.round;
    u.delta = std::move(delta->data);
    u.samples = x.rows();
    u.loss = rep->train_loss;
    u.metric = rep->validation.performance;
    if (f.privacy) {
      Status ps = Privatize(f, &u);
      if (!ps.ok()) {
        MLOG_ERROR("edge", "cannot record the privacy release; update not sent").Kv("site", site).Kv("link", f.cfg.id)
            .Kv("error", ps.message());
        return;
      }
    }
    u.checksum = Fnv1a64(u.delta.data(), u.delta.size() * sizeof(float));
    f.joined = true;
    f.data_at_try = -1;
    f.last_update = Clock::now();
    if (f.cfg.secure_aggregation) {
      MLOG_INFO("edge", "local update computed; joining the secure aggregation").Kv("site", site).Kv("link", f.cfg.id)
          .Kv("round", f.round).Kv("samples", u.samples).Kv("local_p", u.metric);
      auto advertise = f.secagg->Begin(f.cfg.id, f.round, std::move(u.delta));
      if (!advertise.ok()) {
        MLOG_ERROR("edge", "secure aggregation failed to start").Kv("site", site).Kv("link", f.cfg.id).Kv("error", advertise.status().message());
        return;
      }
      SendSecAgg(*advertise, /*counts_as_update=*/true);
      return;
    }
    // Kept on disk until the aggregator acknowledges (or the round is gone).
    auto ins = fed_db->Prepare("INSERT OR REPLACE INTO pending (link, round, delta, samples, loss, metric) VALUES (?, ?, ?, ?, ?, ?)");
    if (ins.ok()) {
      Status s = ins->Bind(1, u.link_id).Bind(2, static_cast<int64_t>(u.base_round)).BindBlob(3, u.delta.data(), u.delta.size() * sizeof(float))
                     .Bind(4, static_cast<int64_t>(u.samples)).Bind(5, u.loss).Bind(6, u.metric).Run();
      if (!s.ok()) MLOG_ERROR("edge", "cannot keep the update on disk").Kv("site", site).Kv("error", s.message());
    }
    MLOG_INFO("edge", "local update computed").Kv("site", site).Kv("link", f.cfg.id).Kv("round", f.round)
        .Kv("samples", u.samples).Kv("local_p", u.metric);
    SendUpdate(u);
  }

  void SendUpdate(const protocol::Update& u) {
    std::lock_guard<std::mutex> lock(client_mu);
    if (!client || !client->connected()) {
      MLOG_INFO("edge", "offline: update kept for when the aggregator is back").Kv("site", site).Kv("link", u.link_id).Kv("round", u.base_round);
      return;
    }
    Status s = client->Send(u);
    std::lock_guard<std::mutex> l2(mu);
    if (s.ok()) {
      ++st.updates_sent;
      st.bytes_sent += static_cast<int64_t>(u.delta.size() * sizeof(float));
    }
  }

  void SendSecAgg(const protocol::SecAgg& m, bool counts_as_update) {
    std::lock_guard<std::mutex> lock(client_mu);
    if (!client || !client->connected()) {
      MLOG_INFO("edge", "offline: this secure-aggregation round is left").Kv("site", site).Kv("link", m.link_id);
      return;
    }
    Status s = client->Send(m);
    std::lock_guard<std::mutex> l2(mu);
    if (s.ok()) {
      if (counts_as_update) ++st.updates_sent;
      st.bytes_sent += static_cast<int64_t>(m.payload.size());
    }
  }

  void OnMessage(protocol::SecAgg& m) {
    for (auto& f : feds) {
      if (f.cfg.id != m.link_id || !f.cfg.secure_aggregation) continue;
      bool finished = false;
      auto reply = f.secagg->OnMessage(m, &finished);
      if (!reply.ok()) {
        MLOG_ERROR("edge", "secure aggregation step failed; this round is left").Kv("site", site).Kv("link", m.link_id)
            .Kv("error", reply.status().message());
        f.secagg->Reset();
        return;
      }
      if (*reply) SendSecAgg(**reply, false);
      if (finished) {
        if (f.secagg->clipped() > 0) {
          MLOG_WARN("edge", "update values clipped to the secure-aggregation bound").Kv("site", site).Kv("link", m.link_id)
              .Kv("values", f.secagg->clipped());
        }
        std::lock_guard<std::mutex> lock(mu);
        ++st.rounds_joined;
      }
      return;
    }
  }

  void DeletePending(const std::string& link_id, uint64_t round) {
    auto d = fed_db->Prepare("DELETE FROM pending WHERE link = ? AND round = ?");
    if (d.ok()) (void)d->Bind(1, link_id).Bind(2, static_cast<int64_t>(round)).Run();
  }

  // Local vs global vs fused on local validation rows; publishes what serves.
  void ChooseServing(Fed& f) {
    if (!f.global) return;
    if (f.target < 0) {
      TrainOracle(&f, /*retrain_local=*/false);
      return;
    }
    std::shared_ptr<const LinkServing> cur = Serving();
    if (!cur) return;
    link::Column x, y;
    if (!LocalRows(f, &x, &y) || x.rows() < 10) return;
    // Compare on the newest fifth of the local samples (the local link saw them in training,
    // so a global link must be clearly better to be chosen).
    const std::size_t n = x.rows(), cut = n - std::max<std::size_t>(5, n / 5);
    link::Column xv = Range(x, cut, n), yv = Range(y, cut, n);
    auto local_ev = cur->link(f.source, f.target).Evaluate(xv, yv);
    auto global_ev = f.global->Evaluate(xv, yv);
    if (!local_ev.ok() || !global_ev.ok()) return;
    const bool global_better = global_ev->performance > local_ev->performance + 0.02;
    if (global_better) {
      auto rows = store->Sampled(models, o.train_window);
      link::TrainOptions t;
      t.seed = o.seed;
      t.epochs = o.retrain_epochs;
      auto swapped = rows.ok() ? cur->ReplaceLink(f.source, f.target, *f.global, rows->outputs, t)
                               : Result<std::unique_ptr<LinkServing>>(rows.status());
      if (!swapped.ok()) {
        MLOG_WARN("edge", "global link not swapped in").Kv("site", site).Kv("link", f.cfg.id).Kv("error", swapped.status().message());
        return;
      }
      MLOG_INFO("edge", "serving the global link: it validates better here").Kv("site", site).Kv("link", f.cfg.id)
          .Kv("global_p", global_ev->performance).Kv("local_p", local_ev->performance);
      std::lock_guard<std::mutex> lock(mu);
      serving_now = std::shared_ptr<const LinkServing>(std::move(swapped).value());
    }
    std::lock_guard<std::mutex> lock(mu);
    st.serving_choice[f.cfg.id] = global_better ? "global" : "local";
    st.link_performance[f.cfg.id] = std::max(global_ev->performance, local_ev->performance);
  }

  void MaybeRetrain() {
    if (o.retrain_samples <= 0 || new_samples < o.retrain_samples) return;
    auto cur = Serving();
    if (!cur) return;
    new_samples = 0;
    auto rows = store->Sampled(models, o.train_window);
    if (!rows.ok() || rows->frames.size() < 10) return;
    link::TrainOptions t;
    t.epochs = o.retrain_epochs;
    t.seed = o.seed + static_cast<uint64_t>(st.retrains);
    auto start = Clock::now();
    auto next = cur->Retrain(rows->outputs, t, o.sampling.policy == "loss_prediction");
    if (!next.ok()) {
      MLOG_ERROR("edge", "online re-training failed; serving keeps the current links").Kv("site", site).Kv("error", next.status().message());
      return;
    }
    std::shared_ptr<const LinkServing> fresh = std::move(next).value();
    Status saved = fresh->Save(data_dir + "/links");
    if (!saved.ok()) MLOG_WARN("edge", "links not saved").Kv("site", site).Kv("error", saved.message());
    {
      std::lock_guard<std::mutex> lock(mu);
      serving_now = fresh;
      ++st.retrains;
    }
    MLOG_INFO("edge", "links re-trained online").Kv("site", site).Kv("samples", rows->frames.size())
        .Kv("seconds", std::chrono::duration<double>(Clock::now() - start).count());
  }

  void MaybeTrainOracle() {
    if (!o.oracle_enabled || new_labels < o.oracle.retrain_labels) return;
    if (store->LabelCount() < o.oracle.min_labels) return;
    new_labels = 0;
    Fed* fed = nullptr;
    for (auto& f : feds) {
      if (f.target < 0) fed = &f;
    }
    TrainOracle(fed, /*retrain_local=*/true);
  }

  // Trains the local oracle link on the labels (first 80% by frame; the rest validates), fuses it
  // with the global oracle link when there is one, and serves the best of them.
  void TrainOracle(Fed* fed, bool retrain_local) {
    const int src = oracle_source;
    auto rows = store->LabelledRows(models[src], o.oracle.dim);
    if (!rows.ok()) return;
    const std::size_t n = rows->frames.size();
    auto state = std::make_shared<OracleState>();
    state->model = models[src];
    if (fed && fed->global) state->global = std::shared_ptr<const link::Link>(fed->global->Clone());
    if (n < static_cast<std::size_t>(o.oracle.min_labels)) {
      if (!state->global) return;
      state->chosen = "global";  // no local labels yet: the global link is all there is
    } else {
      const std::size_t cut = std::max<std::size_t>(1, n * 4 / 5);
      link::Column xt = Range(rows->source, 0, cut), yt = Range(rows->labels, 0, cut);
      link::Column xv = Range(rows->source, cut, n), yv = Range(rows->labels, cut, n);
      link::LinkSpec spec;
      spec.source = models[src].format;
      spec.target = link::OutputFormat::Vector(o.oracle.dim);
      spec.task = o.oracle.task;
      if (fed) spec = fed->cfg.spec;
      link::TrainOptions t;
      t.seed = o.seed;
      if (retrain_local || !oracle_local) {
        auto local = link::Link::Create(spec, o.seed);
        if (!local.ok()) return;
        if (!(*local)->Train(xt, yt, t).ok()) return;
        oracle_local = std::shared_ptr<const link::Link>(std::move(local).value());
      }
      state->local = oracle_local;
      double best = -1;
      if (!xv.rows()) {
        best = 0;
      } else if (auto ev = state->local->Evaluate(xv, yv); ev.ok()) {
        best = ev->performance;
      }
      std::map<std::string, double> perf = {{"local", best}};
      if (state->global && xv.rows()) {
        std::vector<std::unique_ptr<link::Link>> two;
        two.push_back(state->local->Clone());
        two.push_back(state->global->Clone());
        auto ens = link::Ensemble::Create(std::move(two));
        if (ens.ok() && (*ens)->TrainWeights({xt, xt}, yt, t).ok()) state->fused = std::shared_ptr<const link::Ensemble>(std::move(ens).value());
        if (auto ev = state->global->Evaluate(xv, yv); ev.ok()) perf["global"] = ev->performance;
        if (state->fused) {
          if (auto ev = state->fused->Evaluate({xv, xv}, yv); ev.ok()) perf["fused"] = ev->performance;
        }
      }
      for (const auto& [name, p] : perf) {
        if (p > best) {
          best = p;
          state->chosen = name;
        }
      }
      auto line = MLOG_INFO("edge", "oracle link trained");
      line.Kv("site", site).Kv("labels", n).Kv("serving", state->chosen);
      for (const auto& [name, p] : perf) line.Kv(name + "_p", p);
      std::lock_guard<std::mutex> lock(mu);
      ++st.oracle_trainings;
      if (fed) {
        st.serving_choice[fed->cfg.id] = state->chosen;
        st.link_performance[fed->cfg.id] = best;
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    oracle_now = state;
  }

  std::shared_ptr<const LinkServing> Serving() const {
    std::lock_guard<std::mutex> lock(mu);
    return serving_now;
  }

  void ConnectLoop() {
    const auto& f = o.federation;
    double backoff = f.backoff_initial_s;
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    std::mt19937_64 r(std::hash<std::string>()(site));
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stopping) return;
      }
      protocol::ClientOptions co;
      co.endpoint = f.endpoint;
      co.tls = {f.ca_file, f.cert_file, f.key_file};
      co.connect_timeout_s = f.connect_timeout_s;
      co.idle_timeout_s = f.idle_timeout_s;
      auto closed = std::make_shared<std::atomic<bool>>(false);
      auto c = protocol::Client::Connect(
          co, [this](protocol::Message m) { Push(MessageWork{std::move(m)}, false); },
          [this, closed](const Status& why) {
            closed->store(true);
            bool quitting;
            {
              std::lock_guard<std::mutex> lock(mu);
              quitting = stopping;
            }
            if (quitting) {
              MLOG_INFO("edge", "left the federation").Kv("site", site);
            } else {
              MLOG_WARN("edge", "disconnected from the aggregator; reconnecting").Kv("site", site).Kv("why", why.message());
            }
            std::lock_guard<std::mutex> lock(client_mu);
            client_cv.notify_all();
          });
      if (c.ok()) {
        backoff = f.backoff_initial_s;
        protocol::Hello h;
        h.protocol_version = protocol::kProtocolVersion;
        h.edge_id = site;
        for (const auto& l : f.links) h.links.push_back({l.id, l.spec.Hash()});
        (void)(*c)->Send(h);
        MLOG_INFO("edge", "connected to the aggregator").Kv("site", site).Kv("endpoint", f.endpoint.ToString());
        {
          std::unique_lock<std::mutex> lock(client_mu);
          client = std::move(c).value();
          {
            std::lock_guard<std::mutex> l2(mu);
            st.connected = true;
          }
          client_cv.wait(lock, [&] {
            std::lock_guard<std::mutex> l2(mu);
            return stopping || closed->load();
          });
          auto old = std::move(client);
          lock.unlock();
          {
            std::lock_guard<std::mutex> l2(mu);
            st.connected = false;
          }
          old.reset();  // closes, outside the lock (its callbacks take client_mu)
        }
      } else {
        MLOG_WARN("edge", "cannot reach the aggregator; retrying").Kv("site", site).Kv("error", c.status().message())
            .Kv("retry_s", backoff);
      }
      const double wait = backoff * jitter(r);
      backoff = std::min(f.backoff_max_s, backoff * 2);
      std::unique_lock<std::mutex> lock(client_mu);
      client_cv.wait_for(lock, std::chrono::duration<double>(wait), [&] {
        std::lock_guard<std::mutex> l2(mu);
        return stopping;
      });
    }
  }

  protocol::HttpResponse OnHttp(const protocol::HttpRequest& r) {
    const std::string path = r.target.substr(0, r.target.find('?'));
    if (path == "/healthz" && r.method == "GET") {
      auto s = Stats();
      nlohmann::json j = {{"site", site}, {"recorded", s.recorded}, {"labels", s.labels}, {"retrains", s.retrains},
                          {"connected", s.connected}, {"rounds_joined", s.rounds_joined}};
      return {200, "application/json", j.dump() + "\n"};
    }
    if (path == "/labels") {
      if (r.method != "POST") return {405, "text/plain; charset=utf-8", "POST labels (CSV or JSON lines) to /labels\n"};
      if (!o.oracle_enabled) return {404, "text/plain; charset=utf-8", "this site has no oracle link configured (oracle: in its config)\n"};
      auto labels = ParseLabels(r.body, o.oracle.dim, o.oracle.task == link::TaskKind::kSingleLabel);
      if (!labels.ok()) return {400, "text/plain; charset=utf-8", labels.status().message() + "\n"};
      const std::size_t n = labels->size();
      Push(LabelsWork{std::move(labels).value()}, false);
      return {202, "application/json", nlohmann::json({{"queued", n}}).dump() + "\n"};
    }
    return {404, "text/plain; charset=utf-8", "not found; try GET /healthz or POST /labels\n"};
  }

  LearnerStats Stats() const {
    std::lock_guard<std::mutex> lock(mu);
    return st;
  }
};

Learner::Learner(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Learner::~Learner() { Stop(); }

Result<std::unique_ptr<Learner>> Learner::Start(const std::string& site, const std::string& data_dir,
                                                const std::vector<ModelInfo>& models, const LearningOptions& o) {
  auto impl = std::make_unique<Impl>();
  impl->site = site;
  impl->data_dir = data_dir;
  impl->models = models;
  impl->o = o;
  impl->rng.seed(o.seed);
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return Status::PermissionDenied("site '" + site + "': cannot create data_dir " + data_dir + ": " + ec.message());
  MLINK_ASSIGN_OR_RETURN(impl->store, SampleStore::Open(data_dir + "/samples.db", o.store));
  auto fdb = sql::Database::Open(data_dir + "/federation.db");
  if (!fdb.ok()) return fdb.status().WithContext("site '" + site + "' federation state");
  impl->fed_db = std::move(fdb).value();
  MLINK_RETURN_IF_ERROR(impl->fed_db->Migrate(kFederationSchema).status());
  auto index = [&](const std::string& name) {
    for (std::size_t i = 0; i < models.size(); ++i) {
      if (models[i].name == name) return static_cast<int>(i);
    }
    return -1;
  };
  if (o.oracle_enabled && index(o.oracle.model) < 0) {
    return Status::InvalidArgument("site '" + site + "': oracle model '" + o.oracle.model + "' is not one of the site's models");
  }
  impl->oracle_source = o.oracle_enabled ? index(o.oracle.model) : -1;
  for (const auto& l : o.federation.links) {
    Impl::Fed f;
    f.cfg = l;
    f.source = index(l.source);
    f.target = l.target == "oracle" ? -1 : index(l.target);
    if (f.source < 0 || (f.target < 0 && l.target != "oracle")) {
      return Status::InvalidArgument("site '" + site + "': federated link '" + l.id + "' names an unknown model");
    }
    if (f.target < 0 && !o.oracle_enabled) {
      return Status::InvalidArgument("site '" + site + "': federated link '" + l.id + "' targets the oracle, but no oracle is configured");
    }
    if (l.secure_aggregation && o.federation.enabled) {
      // Signed with this site's TLS identity; rosters checked against the deployment CA.
      auto read = [](const std::string& path) -> Result<std::string> {
        std::ifstream in(path, std::ios::binary);
        if (!in) return Status::NotFound("cannot read '" + path + "'");
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
      };
      MLINK_ASSIGN_OR_RETURN(std::string key, read(o.federation.key_file));
      MLINK_ASSIGN_OR_RETURN(std::string cert, read(o.federation.cert_file));
      MLINK_ASSIGN_OR_RETURN(std::string ca, read(o.federation.ca_file));
      f.secagg = std::make_unique<SecAggParticipant>(std::move(key), std::move(cert), std::move(ca));
    }
    if (l.privacy.enabled()) {
      int64_t released = 0;
      auto q = impl->fed_db->Prepare("SELECT releases FROM dp_releases WHERE link = ?");
      if (!q.ok()) return q.status();
      q->Bind(1, l.id);
      MLINK_ASSIGN_OR_RETURN(bool row, q->Step());
      if (row) released = q->ColumnInt(0);
      f.privacy.emplace(l.privacy, static_cast<uint64_t>(released));
      impl->PublishPrivacy(f);
    }
    impl->feds.push_back(std::move(f));
  }
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    impl->st.labels = impl->store->LabelCount();
  }
  Impl* p = impl.get();
  if (o.http_port >= 0) {
    MLINK_ASSIGN_OR_RETURN(impl->http, protocol::HttpServer::Start(o.http_listen, static_cast<uint16_t>(o.http_port),
                                                                   [p](const protocol::HttpRequest& r) { return p->OnHttp(r); }));
  }
  impl->thread = std::thread([p] { p->Run(); });
  if (o.federation.enabled) impl->conn_thread = std::thread([p] { p->ConnectLoop(); });
  // Labels already stored (e.g. imported while the daemon was down) train the oracle at once.
  if (o.oracle_enabled) impl->new_labels = impl->st.labels;
  return std::unique_ptr<Learner>(new Learner(std::move(impl)));
}

void Learner::Stop() {
  if (!impl_) return;
  if (impl_->http) impl_->http->Stop();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
    impl_->cv.notify_all();
  }
  {
    std::lock_guard<std::mutex> lock(impl_->client_mu);
    impl_->client_cv.notify_all();
  }
  if (impl_->conn_thread.joinable()) impl_->conn_thread.join();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void Learner::Submit(int64_t frame, double ts, const std::vector<ModelOutput>& outputs, const std::vector<bool>& ran,
                     bool sampled) {
  impl_->Push(FrameWork{frame, ts, outputs, ran, sampled}, !sampled);
}

void Learner::SubmitLabels(std::vector<Label> labels) { impl_->Push(LabelsWork{std::move(labels)}, false); }

std::shared_ptr<const LinkServing> Learner::serving() const { return impl_->Serving(); }

std::shared_ptr<const OracleServing> Learner::oracle() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->oracle_now;
}

void Learner::SetServing(std::shared_ptr<const LinkServing> serving) {
  Status saved = serving->Save(impl_->data_dir + "/links");
  if (!saved.ok()) MLOG_WARN("edge", "links not saved").Kv("site", impl_->site).Kv("error", saved.message());
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->serving_now = std::move(serving);
}

LearnerStats Learner::stats() const { return impl_->Stats(); }

uint16_t Learner::http_port() const { return impl_->http ? impl_->http->port() : 0; }

bool Learner::WaitIdle(double timeout_s) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  return impl_->idle_cv.wait_for(lock, std::chrono::duration<double>(timeout_s),
                                 [&] { return impl_->queue.empty() && !impl_->busy; });
}

}  // namespace mlink::edge
