#include "store.h"

#include <chrono>
#include <cstring>
#include <filesystem>

namespace mlink::cloud {

namespace {

const std::vector<std::string> kSchema = {
    "CREATE TABLE links (id TEXT PRIMARY KEY, spec_hash TEXT NOT NULL, round INTEGER NOT NULL,"
    " params BLOB NOT NULL);"
    "CREATE TABLE updates (link TEXT NOT NULL, round INTEGER NOT NULL, edge TEXT NOT NULL,"
    " samples INTEGER NOT NULL, loss REAL NOT NULL, metric REAL NOT NULL, delta BLOB NOT NULL,"
    " received_at REAL NOT NULL, PRIMARY KEY (link, round, edge));"
    "CREATE TABLE rounds (link TEXT NOT NULL, round INTEGER NOT NULL, updates INTEGER NOT NULL,"
    " duration_s REAL NOT NULL, closed_at REAL NOT NULL, PRIMARY KEY (link, round));",
    // The status page's metric history: per closed round the sample-weighted mean of the metric
    // the edges reported (NULL: none reported, or a round closed before this column existed).
    "ALTER TABLE rounds ADD COLUMN metric REAL;"
    "ALTER TABLE rounds ADD COLUMN samples INTEGER NOT NULL DEFAULT 0;",
};

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<float> Floats(const std::vector<uint8_t>& blob) {
  std::vector<float> v(blob.size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), blob.data(), v.size() * sizeof(float));
  return v;
}

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return Status::PermissionDenied("aggregator data folder " + data_dir + ": " + ec.message());
  sql::Database::Options o;
  o.synchronous_full = true;  // an acknowledged update must survive power loss, not just a crash
  MLINK_ASSIGN_OR_RETURN(auto db, sql::Database::Open(data_dir + "/aggregator.db", o));
  MLINK_RETURN_IF_ERROR(db->Migrate(kSchema).status());
  return std::unique_ptr<Store>(new Store(std::move(db)));
}

Result<Store::LinkState> Store::LoadOrInitLink(const std::string& id, const std::string& spec_hash,
                                               const std::vector<float>& init) {
  MLINK_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT spec_hash, round, params FROM links WHERE id = ?"));
  q.Bind(1, id);
  MLINK_ASSIGN_OR_RETURN(bool row, q.Step());
  if (row) {
    std::string stored = q.ColumnText(0);
    if (stored != spec_hash) {
      return Status::FailedPrecondition("link '" + id + "': the stored global link has spec hash " + stored +
                                        " but the config now says " + spec_hash +
                                        "; use a new link id (or move " + db_->path() + " away) to start over");
    }
    LinkState s;
    s.round = static_cast<uint64_t>(q.ColumnInt(1));
    s.params = Floats(q.ColumnBlob(2));
    if (s.params.size() != init.size()) {
      return Status::DataLoss("link '" + id + "': stored parameters have " + std::to_string(s.params.size()) +
                              " values, the spec needs " + std::to_string(init.size()));
    }
    return s;
  }
  MLINK_ASSIGN_OR_RETURN(auto ins, db_->Prepare("INSERT INTO links (id, spec_hash, round, params) VALUES (?, ?, 0, ?)"));
  MLINK_RETURN_IF_ERROR(ins.Bind(1, id).Bind(2, spec_hash).BindBlob(3, init.data(), init.size() * sizeof(float)).Run());
  return LinkState{0, init};
}

Status Store::ForEachUpdate(const std::string& link, uint64_t round, const std::function<Status(StoredUpdate)>& fn) {
  MLINK_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT edge, samples, loss, metric, delta FROM updates "
                                              "WHERE link = ? AND round = ? ORDER BY received_at, edge"));
  q.Bind(1, link).Bind(2, static_cast<int64_t>(round));
  while (true) {
    MLINK_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return Status::Ok();
    StoredUpdate u;
    u.edge = q.ColumnText(0);
    u.samples = static_cast<uint64_t>(q.ColumnInt(1));
    u.loss = q.ColumnDouble(2);
    u.metric = q.ColumnDouble(3);
    u.delta = Floats(q.ColumnBlob(4));
    MLINK_RETURN_IF_ERROR(fn(std::move(u)));
  }
}

Status Store::InsertUpdate(const std::string& link, uint64_t round, const StoredUpdate& u) {
  MLINK_ASSIGN_OR_RETURN(auto ins, db_->Prepare("INSERT INTO updates (link, round, edge, samples, loss, metric, delta,"
                                                " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
  ins.Bind(1, link).Bind(2, static_cast<int64_t>(round)).Bind(3, u.edge).Bind(4, static_cast<int64_t>(u.samples));
  ins.Bind(5, u.loss).Bind(6, u.metric).BindBlob(7, u.delta.data(), u.delta.size() * sizeof(float)).Bind(8, Now());
  return ins.Run();
}

Status Store::InsertUpdates(const std::vector<PendingRow>& rows) {
  if (rows.empty()) return Status::Ok();
  MLINK_ASSIGN_OR_RETURN(auto tx, sql::Transaction::Begin(db_.get()));
  for (const auto& r : rows) MLINK_RETURN_IF_ERROR(InsertUpdate(r.link, r.round, *r.update));
  return tx.Commit();
}

Status Store::CloseRound(const std::string& link, uint64_t round, const std::vector<float>& params, int n,
                         double duration_s) {
  MLINK_ASSIGN_OR_RETURN(auto tx, sql::Transaction::Begin(db_.get()));
  MLINK_ASSIGN_OR_RETURN(auto up, db_->Prepare("UPDATE links SET round = ?, params = ? WHERE id = ? AND round = ?"));
  up.Bind(1, static_cast<int64_t>(round + 1)).BindBlob(2, params.data(), params.size() * sizeof(float));
  up.Bind(3, link).Bind(4, static_cast<int64_t>(round));
  MLINK_RETURN_IF_ERROR(up.Run());
  if (db_->Changes() != 1) return Status::FailedPrecondition("link '" + link + "' is not at round " + std::to_string(round));
  // The round's metric from its stored updates, before they are deleted: weighted by samples, or
  // a plain mean when no update carries samples.
  MLINK_ASSIGN_OR_RETURN(auto hist, db_->Prepare(
      "INSERT INTO rounds (link, round, updates, duration_s, closed_at, metric, samples)"
      " SELECT ?1, ?2, ?3, ?4, ?5,"
      " CASE WHEN SUM(samples) > 0 THEN SUM(metric * samples) / SUM(samples) ELSE AVG(metric) END,"
      " COALESCE(SUM(samples), 0) FROM updates WHERE link = ?1 AND round = ?2"));
  MLINK_RETURN_IF_ERROR(hist.Bind(1, link).Bind(2, static_cast<int64_t>(round)).Bind(3, n).Bind(4, duration_s).Bind(5, Now()).Run());
  MLINK_ASSIGN_OR_RETURN(auto del, db_->Prepare("DELETE FROM updates WHERE link = ? AND round = ?"));
  MLINK_RETURN_IF_ERROR(del.Bind(1, link).Bind(2, static_cast<int64_t>(round)).Run());
  return tx.Commit();
}

Result<std::vector<Store::RoundRecord>> Store::History(const std::string& link, int limit) {
  MLINK_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT round, updates, duration_s, closed_at, metric, samples FROM rounds"
                                              " WHERE link = ?"
                                              " ORDER BY round DESC LIMIT ?"));
  q.Bind(1, link).Bind(2, limit);
  std::vector<RoundRecord> out;
  while (true) {
    MLINK_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    RoundRecord r{static_cast<uint64_t>(q.ColumnInt(0)), static_cast<int>(q.ColumnInt(1)), q.ColumnDouble(2),
                  q.ColumnDouble(3)};
    r.has_metric = !q.ColumnIsNull(4);
    r.metric = r.has_metric ? q.ColumnDouble(4) : 0;
    r.samples = static_cast<uint64_t>(q.ColumnInt(5));
    out.push_back(r);
  }
  return out;
}

}  // namespace mlink::cloud
