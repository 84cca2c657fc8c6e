#include "mlink/edge/trace.h"

#include <cstring>
#include <map>

namespace mlink::edge {

namespace {

const std::vector<std::string> kSchema = {
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE models (idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,"
    " format INTEGER NOT NULL, dim INTEGER NOT NULL, vocab INTEGER NOT NULL, max_len INTEGER NOT NULL,"
    " task TEXT NOT NULL, declared_cost REAL NOT NULL);"
    "CREATE TABLE frames (frame INTEGER PRIMARY KEY, ts REAL NOT NULL);"
    "CREATE TABLE outputs (frame INTEGER NOT NULL, model INTEGER NOT NULL, ok INTEGER NOT NULL,"
    " vec BLOB, tokens BLOB, latency_ms REAL NOT NULL, PRIMARY KEY (frame, model));",
};

template <typename T>
std::vector<T> FromBlob(const std::vector<uint8_t>& b) {
  std::vector<T> v(b.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
  return v;
}

}  // namespace

Result<std::unique_ptr<Trace>> Trace::Create(const std::string& path, const std::string& source) {
  MLINK_ASSIGN_OR_RETURN(auto db, sql::Database::Open(path));
  MLINK_RETURN_IF_ERROR(db->Migrate(kSchema).status());
  std::unique_ptr<Trace> t(new Trace(std::move(db)));
  MLINK_ASSIGN_OR_RETURN(auto ins, t->db_->Prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('source', ?)"));
  MLINK_RETURN_IF_ERROR(ins.Bind(1, source).Run());
  MLINK_RETURN_IF_ERROR(t->LoadModels());
  return t;
}

Result<std::unique_ptr<Trace>> Trace::Open(const std::string& path) {
  sql::Database::Options o;
  o.read_only = true;
  o.create_if_missing = false;
  auto db = sql::Database::Open(path, o);
  if (!db.ok()) return db.status().WithContext("trace " + path);
  std::unique_ptr<Trace> t(new Trace(std::move(db).value()));
  MLINK_ASSIGN_OR_RETURN(int version, t->db_->UserVersion());
  if (version != static_cast<int>(kSchema.size())) {
    return Status::InvalidArgument("trace " + path + ": not a trace file of this version (schema " + std::to_string(version) + ")");
  }
  MLINK_RETURN_IF_ERROR(t->LoadModels());
  return t;
}

Status Trace::LoadModels() {
  MLINK_ASSIGN_OR_RETURN(auto m, db_->Prepare("SELECT value FROM meta WHERE key = 'source'"));
  MLINK_ASSIGN_OR_RETURN(bool row, m.Step());
  if (row) source_ = m.ColumnText(0);
  MLINK_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT name, kind, format, dim, vocab, max_len, task, declared_cost FROM models ORDER BY idx"));
  models_.clear();
  while (true) {
    MLINK_ASSIGN_OR_RETURN(bool r, q.Step());
    if (!r) break;
    ModelInfo info;
    info.name = q.ColumnText(0);
    info.kind = q.ColumnText(1);
    info.format.kind = q.ColumnInt(2) == 1 ? link::FormatKind::kSequence : link::FormatKind::kVector;
    info.format.dim = static_cast<int>(q.ColumnInt(3));
    info.format.vocab = static_cast<int>(q.ColumnInt(4));
    info.format.max_len = static_cast<int>(q.ColumnInt(5));
    MLINK_ASSIGN_OR_RETURN(info.task, link::ParseTaskKind(q.ColumnText(6)));
    info.declared_cost = q.ColumnDouble(7);
    models_.push_back(info);
  }
  return Status::Ok();
}

Status Trace::SetModels(const std::vector<ModelInfo>& models) {
  if (!models_.empty()) {
    if (models_.size() != models.size()) return Status::FailedPrecondition("trace already holds " + std::to_string(models_.size()) + " other models");
    for (std::size_t i = 0; i < models.size(); ++i) {
      if (models_[i].name != models[i].name || !(models_[i].format == models[i].format)) {
        return Status::FailedPrecondition("trace already holds model '" + models_[i].name + "' in column " + std::to_string(i) +
                                          "; appending needs the same models");
      }
    }
    return Status::Ok();
  }
  MLINK_ASSIGN_OR_RETURN(auto ins, db_->Prepare("INSERT INTO models (idx, name, kind, format, dim, vocab, max_len, task, declared_cost)"
                                                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  for (std::size_t i = 0; i < models.size(); ++i) {
    const auto& m = models[i];
    ins.Bind(1, static_cast<int64_t>(i)).Bind(2, m.name).Bind(3, m.kind).Bind(4, m.format.kind == link::FormatKind::kSequence ? 1 : 0);
    ins.Bind(5, m.format.dim).Bind(6, m.format.vocab).Bind(7, m.format.max_len).Bind(8, link::TaskKindName(m.task)).Bind(9, m.declared_cost);
    MLINK_RETURN_IF_ERROR(ins.Run());
  }
  models_ = models;
  return Status::Ok();
}

int Trace::ModelIndex(const std::string& name) const {
  for (std::size_t i = 0; i < models_.size(); ++i) {
    if (models_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

Status Trace::Begin() { return db_->Exec("BEGIN"); }
Status Trace::Commit() { return db_->Exec("COMMIT"); }

Status Trace::AddFrame(int64_t frame, double ts, const std::vector<ModelOutput>& outputs, const std::vector<double>& latency,
                       const std::vector<bool>& ok) {
  if (outputs.size() != models_.size() || latency.size() != models_.size() || ok.size() != models_.size()) {
    return Status::InvalidArgument("trace frame " + std::to_string(frame) + ": expected one output per model");
  }
  MLINK_ASSIGN_OR_RETURN(auto f, db_->Prepare("INSERT OR REPLACE INTO frames (frame, ts) VALUES (?, ?)"));
  MLINK_RETURN_IF_ERROR(f.Bind(1, frame).Bind(2, ts).Run());
  MLINK_ASSIGN_OR_RETURN(auto o, db_->Prepare("INSERT OR REPLACE INTO outputs (frame, model, ok, vec, tokens, latency_ms) VALUES (?, ?, ?, ?, ?, ?)"));
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    o.Bind(1, frame).Bind(2, static_cast<int64_t>(i)).Bind(3, ok[i] ? 1 : 0);
    o.BindBlob(4, outputs[i].vec.data(), outputs[i].vec.size() * sizeof(float));
    o.BindBlob(5, outputs[i].tokens.data(), outputs[i].tokens.size() * sizeof(int32_t));
    o.Bind(6, latency[i]);
    MLINK_RETURN_IF_ERROR(o.Run());
  }
  return Status::Ok();
}

int64_t Trace::FrameCount() const {
  auto q = db_->Prepare("SELECT COUNT(*) FROM frames");
  if (!q.ok() || !q->Step().ok()) return 0;
  return q->ColumnInt(0);
}

Result<Trace::Table> Trace::Load() const {
  const std::size_t k = models_.size();
  MLINK_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT frame, model, ok, vec, tokens, latency_ms FROM outputs ORDER BY frame, model"));
  Table t;
  t.outputs.resize(k);
  for (std::size_t i = 0; i < k; ++i) {
    t.outputs[i].kind = models_[i].format.kind;
    t.outputs[i].dim = models_[i].format.dim;
  }
  std::vector<double> lat_sum(k, 0);
  std::vector<int> lat_n(k, 0);
  std::vector<ModelOutput> row(k);
  std::vector<bool> seen(k, false);
  int64_t current = -1;
  bool all_ok = true;
  auto flush = [&] {
    if (current < 0) return;
    bool complete = all_ok;
    for (bool s : seen) complete = complete && s;
    if (complete) {
      t.frames.push_back(current);
      for (std::size_t i = 0; i < k; ++i) {
        if (models_[i].format.kind == link::FormatKind::kVector) {
          t.outputs[i].values.insert(t.outputs[i].values.end(), row[i].vec.begin(), row[i].vec.end());
        } else {
          t.outputs[i].seqs.push_back(row[i].tokens);
        }
      }
    }
    std::fill(seen.begin(), seen.end(), false);
    all_ok = true;
  };
  while (true) {
    MLINK_ASSIGN_OR_RETURN(bool r, q.Step());
    if (!r) break;
    int64_t frame = q.ColumnInt(0);
    auto m = static_cast<std::size_t>(q.ColumnInt(1));
    if (frame != current) {
      flush();
      current = frame;
    }
    if (m >= k) return Status::DataLoss("trace: output for unknown model column " + std::to_string(m));
    bool ok = q.ColumnInt(2) != 0;
    row[m].vec = FromBlob<float>(q.ColumnBlob(3));
    row[m].tokens = FromBlob<int32_t>(q.ColumnBlob(4));
    if (ok && models_[m].format.kind == link::FormatKind::kVector && static_cast<int>(row[m].vec.size()) != models_[m].format.dim) {
      return Status::DataLoss("trace: frame " + std::to_string(frame) + " model '" + models_[m].name + "' has a wrong-sized output");
    }
    seen[m] = true;
    all_ok = all_ok && ok;
    if (ok) {
      lat_sum[m] += q.ColumnDouble(5);
      ++lat_n[m];
    }
  }
  flush();
  for (std::size_t i = 0; i < k; ++i) t.mean_latency_ms.push_back(lat_n[i] ? lat_sum[i] / lat_n[i] : 0);
  return t;
}

Result<ModelOutput> Trace::Output(const std::string& model, int64_t frame) const {
  int m = ModelIndex(model);
  if (m < 0) return Status::NotFound("trace has no model '" + model + "'");
  MLINK_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT ok, vec, tokens FROM outputs WHERE frame = ? AND model = ?"));
  q.Bind(1, frame).Bind(2, m);
  MLINK_ASSIGN_OR_RETURN(bool r, q.Step());
  if (!r) return Status::NotFound("trace has no frame " + std::to_string(frame) + " for model '" + model + "'");
  if (q.ColumnInt(0) == 0) return Status::Unavailable("model '" + model + "' failed on frame " + std::to_string(frame) + " when recorded");
  return ModelOutput{FromBlob<float>(q.ColumnBlob(1)), FromBlob<int32_t>(q.ColumnBlob(2))};
}

}  // namespace mlink::edge
