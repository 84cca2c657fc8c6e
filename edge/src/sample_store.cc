#include "mlink/edge/sample_store.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <sstream>

namespace mlink::edge {

namespace {

const std::vector<std::string> kSchema = {
    "CREATE TABLE frames (frame INTEGER PRIMARY KEY, ts REAL NOT NULL, sampled INTEGER NOT NULL);"
    "CREATE INDEX frames_sampled ON frames (sampled, frame);"
    "CREATE INDEX frames_ts ON frames (ts);"
    "CREATE TABLE outputs (frame INTEGER NOT NULL, model TEXT NOT NULL, value BLOB NOT NULL,"
    " PRIMARY KEY (frame, model)) WITHOUT ROWID;"
    "CREATE TABLE labels (frame INTEGER PRIMARY KEY, value BLOB NOT NULL, added REAL NOT NULL);",
};

template <typename T>
std::vector<T> FromBlob(const std::vector<uint8_t>& b) {
  std::vector<T> v(b.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
  return v;
}

link::Column EmptyColumn(const ModelInfo& m) {
  link::Column c;
  c.kind = m.format.kind;
  c.dim = m.format.dim;
  return c;
}

void Append(link::Column* c, const std::vector<uint8_t>& blob) {
  if (c->kind == link::FormatKind::kVector) {
    auto v = FromBlob<float>(blob);
    c->values.insert(c->values.end(), v.begin(), v.end());
  } else {
    c->seqs.push_back(FromBlob<int32_t>(blob));
  }
}

}  // namespace

Result<std::unique_ptr<SampleStore>> SampleStore::Open(const std::string& path, const SampleStoreOptions& options) {
  if (options.max_sampled < 1 || options.recent_frames < 0 || options.max_labels < 0) {
    return Status::InvalidArgument("sample store: max_sampled >= 1, recent_frames >= 0, max_labels >= 0 expected");
  }
  auto db = sql::Database::Open(path);
  if (!db.ok()) return db.status().WithContext("sample store");
  std::unique_ptr<SampleStore> s(new SampleStore());
  s->db_ = std::move(db).value();
  s->options_ = options;
  auto v = s->db_->Migrate(kSchema);
  if (!v.ok()) return v.status().WithContext("sample store " + path);
  MLINK_ASSIGN_OR_RETURN(auto f, s->db_->Prepare("INSERT INTO frames (frame, ts, sampled) VALUES (?, ?, ?) "
                                                 "ON CONFLICT (frame) DO UPDATE SET sampled = max(sampled, excluded.sampled)"));
  MLINK_ASSIGN_OR_RETURN(auto o, s->db_->Prepare("INSERT OR REPLACE INTO outputs (frame, model, value) VALUES (?, ?, ?)"));
  s->add_frame_ = std::make_unique<sql::Statement>(std::move(f));
  s->add_output_ = std::make_unique<sql::Statement>(std::move(o));
  return s;
}

Status SampleStore::Add(const std::vector<ModelInfo>& models, int64_t frame, double ts,
                        const std::vector<ModelOutput>& outputs, const std::vector<bool>& ran, bool sampled) {
  if (outputs.size() != models.size() || ran.size() != models.size()) {
    return Status::InvalidArgument("sample store: " + std::to_string(models.size()) + " models but " +
                                   std::to_string(outputs.size()) + " outputs");
  }
  MLINK_ASSIGN_OR_RETURN(auto txn, sql::Transaction::Begin(db_.get()));
  sql::Statement& f = *add_frame_;
  sql::Statement& o = *add_output_;
  f.Reset();  // after a failed run the statement may be mid-way
  o.Reset();
  MLINK_RETURN_IF_ERROR(f.Bind(1, frame).Bind(2, ts).Bind(3, sampled ? 1 : 0).Run());
  for (std::size_t i = 0; i < models.size(); ++i) {
    if (!ran[i]) continue;
    const bool vec = models[i].format.kind == link::FormatKind::kVector;
    if (vec && static_cast<int>(outputs[i].vec.size()) != models[i].format.dim) {
      return Status::InvalidArgument("sample store: model '" + models[i].name + "' output has " +
                                     std::to_string(outputs[i].vec.size()) + " values, expected " +
                                     std::to_string(models[i].format.dim));
    }
    const void* data = vec ? static_cast<const void*>(outputs[i].vec.data()) : static_cast<const void*>(outputs[i].tokens.data());
    const std::size_t bytes = vec ? outputs[i].vec.size() * sizeof(float) : outputs[i].tokens.size() * sizeof(int32_t);
    static const uint8_t kEmpty = 0;
    MLINK_RETURN_IF_ERROR(o.Bind(1, frame).Bind(2, models[i].name).BindBlob(3, bytes ? data : &kEmpty, bytes).Run());
  }
  MLINK_RETURN_IF_ERROR(txn.Commit());
  if (++adds_since_evict_ >= 64) {
    adds_since_evict_ = 0;
    MLINK_RETURN_IF_ERROR(Evict());
  }
  return Status::Ok();
}

Status SampleStore::Evict() {
  MLINK_ASSIGN_OR_RETURN(auto txn, sql::Transaction::Begin(db_.get()));
  const std::string s = std::to_string(options_.max_sampled), r = std::to_string(options_.recent_frames),
                    l = std::to_string(options_.max_labels);
  MLINK_RETURN_IF_ERROR(db_->Exec(
      "DELETE FROM frames WHERE sampled = 1 AND frame NOT IN (SELECT frame FROM frames WHERE sampled = 1 "
      "ORDER BY frame DESC LIMIT " + s + ");"
      "DELETE FROM labels WHERE frame NOT IN (SELECT frame FROM labels ORDER BY frame DESC LIMIT " + l + ");"
      "DELETE FROM frames WHERE sampled = 0 AND frame NOT IN (SELECT frame FROM labels) AND frame NOT IN "
      "(SELECT frame FROM frames WHERE sampled = 0 ORDER BY frame DESC LIMIT " + r + ");"
      "DELETE FROM outputs WHERE frame NOT IN (SELECT frame FROM frames);"));
  return txn.Commit();
}

Result<SampleStore::LabelResult> SampleStore::AddLabels(const std::vector<Label>& labels, int dim, double tolerance_s) {
  LabelResult res;
  MLINK_ASSIGN_OR_RETURN(auto txn, sql::Transaction::Begin(db_.get()));
  MLINK_ASSIGN_OR_RETURN(auto by_frame, db_->Prepare("SELECT frame FROM frames WHERE frame = ?"));
  MLINK_ASSIGN_OR_RETURN(auto by_ts, db_->Prepare("SELECT frame, abs(ts - ?1) AS d FROM frames WHERE ts BETWEEN ?1 - ?2 AND ?1 + ?2 ORDER BY d LIMIT 1"));
  MLINK_ASSIGN_OR_RETURN(auto ins, db_->Prepare("INSERT OR REPLACE INTO labels (frame, value, added) VALUES (?, ?, julianday('now'))"));
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const Label& lab = labels[i];
    const std::string which = lab.frame >= 0 ? "frame " + std::to_string(lab.frame) : "t=" + std::to_string(lab.timestamp_s);
    if (static_cast<int>(lab.value.size()) != dim) {
      res.rejected.push_back(which + ": " + std::to_string(lab.value.size()) + " values, expected " + std::to_string(dim));
      continue;
    }
    int64_t frame = -1;
    if (lab.frame >= 0) {
      by_frame.Reset();
      MLINK_ASSIGN_OR_RETURN(bool row, by_frame.Bind(1, lab.frame).Step());
      if (row) frame = lab.frame;
    } else {
      by_ts.Reset();
      MLINK_ASSIGN_OR_RETURN(bool row, by_ts.Bind(1, lab.timestamp_s).Bind(2, tolerance_s).Step());
      if (row) frame = by_ts.ColumnInt(0);
    }
    if (frame < 0) {
      res.rejected.push_back(which + ": no stored frame matches (not served yet, or evicted)");
      continue;
    }
    MLINK_RETURN_IF_ERROR(ins.Bind(1, frame).BindBlob(2, lab.value.data(), lab.value.size() * sizeof(float)).Run());
    ++res.stored;
  }
  MLINK_RETURN_IF_ERROR(txn.Commit());
  return res;
}

Result<SampleStore::Rows> SampleStore::Sampled(const std::vector<ModelInfo>& models, int64_t limit) const {
  Rows rows;
  for (const auto& m : models) rows.outputs.push_back(EmptyColumn(m));
  MLINK_ASSIGN_OR_RETURN(auto q, db_->Prepare(
      "SELECT frame FROM (SELECT frame FROM frames WHERE sampled = 1 ORDER BY frame DESC LIMIT ?) ORDER BY frame"));
  MLINK_ASSIGN_OR_RETURN(auto o, db_->Prepare("SELECT value FROM outputs WHERE frame = ? AND model = ?"));
  q.Bind(1, limit > 0 ? limit : int64_t{1} << 62);
  std::vector<std::vector<uint8_t>> blobs(models.size());
  while (true) {
    MLINK_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    const int64_t frame = q.ColumnInt(0);
    bool complete = true;
    for (std::size_t i = 0; i < models.size() && complete; ++i) {
      o.Reset();
      MLINK_ASSIGN_OR_RETURN(bool got, o.Bind(1, frame).Bind(2, models[i].name).Step());
      complete = got;
      if (got) blobs[i] = o.ColumnBlob(0);
      if (got && models[i].format.kind == link::FormatKind::kVector &&
          blobs[i].size() != static_cast<std::size_t>(models[i].format.dim) * sizeof(float)) {
        complete = false;  // the model's output width changed since: not usable
      }
    }
    if (!complete) continue;
    rows.frames.push_back(frame);
    for (std::size_t i = 0; i < models.size(); ++i) Append(&rows.outputs[i], blobs[i]);
  }
  return rows;
}

Result<SampleStore::Labelled> SampleStore::LabelledRows(const ModelInfo& model, int label_dim) const {
  Labelled out;
  out.source = EmptyColumn(model);
  out.labels = link::Column::Vectors(label_dim, {});
  MLINK_ASSIGN_OR_RETURN(auto q, db_->Prepare(
      "SELECT l.frame, o.value, l.value FROM labels l JOIN outputs o ON o.frame = l.frame AND o.model = ? ORDER BY l.frame"));
  q.Bind(1, model.name);
  while (true) {
    MLINK_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    auto src = q.ColumnBlob(1);
    auto lab = q.ColumnBlob(2);
    if (lab.size() != static_cast<std::size_t>(label_dim) * sizeof(float)) continue;
    if (model.format.kind == link::FormatKind::kVector && src.size() != static_cast<std::size_t>(model.format.dim) * sizeof(float)) continue;
    out.frames.push_back(q.ColumnInt(0));
    Append(&out.source, src);
    Append(&out.labels, lab);
  }
  return out;
}

namespace {
int64_t Count(sql::Database* db, const std::string& sql) {
  auto q = db->Prepare(sql);
  if (!q.ok()) return -1;
  auto row = q->Step();
  return row.ok() && *row ? q->ColumnInt(0) : -1;
}
}  // namespace

int64_t SampleStore::SampledCount() const { return Count(db_.get(), "SELECT count(*) FROM frames WHERE sampled = 1"); }
int64_t SampleStore::FrameCount() const { return Count(db_.get(), "SELECT count(*) FROM frames"); }
int64_t SampleStore::LabelCount() const { return Count(db_.get(), "SELECT count(*) FROM labels"); }
int64_t SampleStore::NewestFrame() const { return Count(db_.get(), "SELECT coalesce(max(frame), -1) FROM frames"); }

Result<std::vector<Label>> ParseLabels(const std::string& text, int dim, bool one_hot) {
  std::vector<Label> out;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  auto value_of = [&](const std::vector<double>& v, Label* lab) -> Status {
    if (one_hot && v.size() == 1 && dim > 1) {
      const double k = v[0];
      if (k < 0 || k >= dim || std::floor(k) != k) {
        return Status::InvalidArgument("class " + std::to_string(k) + " outside 0.." + std::to_string(dim - 1));
      }
      lab->value.assign(static_cast<std::size_t>(dim), 0.f);
      lab->value[static_cast<std::size_t>(k)] = 1.f;
    } else {
      if (static_cast<int>(v.size()) != dim) {
        return Status::InvalidArgument(std::to_string(v.size()) + " values, expected " + std::to_string(dim) +
                                       (one_hot ? " (or one class number)" : ""));
      }
      for (double x : v) {
        if (!std::isfinite(x)) return Status::InvalidArgument("non-finite value");
        lab->value.push_back(static_cast<float>(x));
      }
    }
    return Status::Ok();
  };
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = "line " + std::to_string(n);
    Label lab;
    std::vector<double> values;
    if (line[line.find_first_not_of(" \t")] == '{') {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument(where + ": not a JSON object");
      if (j.contains("frame") && j["frame"].is_number_integer()) {
        lab.frame = j["frame"].get<int64_t>();
      } else if (j.contains("ts") && j["ts"].is_number()) {
        lab.timestamp_s = j["ts"].get<double>();
      } else {
        return Status::InvalidArgument(where + ": expected an integer \"frame\" or a number \"ts\"");
      }
      if (!j.contains("label")) return Status::InvalidArgument(where + ": missing \"label\"");
      const auto& v = j["label"];
      if (v.is_number()) {
        values.push_back(v.get<double>());
      } else if (v.is_array()) {
        for (const auto& x : v) {
          if (!x.is_number()) return Status::InvalidArgument(where + ": \"label\" must hold numbers");
          values.push_back(x.get<double>());
        }
      } else {
        return Status::InvalidArgument(where + ": \"label\" must be a number or an array of numbers");
      }
    } else {
      if (std::isalpha(static_cast<unsigned char>(line[0])) && line.rfind("t=", 0) != 0) {
        if (n == 1) continue;  // a CSV header
        return Status::InvalidArgument(where + ": expected 'frame,values...' or 't=SECONDS,values...'");
      }
      std::istringstream cells(line);
      std::string cell;
      bool first = true;
      while (std::getline(cells, cell, ',')) {
        char* end = nullptr;
        const char* s = cell.c_str();
        const bool is_ts = first && cell.rfind("t=", 0) == 0;
        if (is_ts) s += 2;
        double x = std::strtod(s, &end);
        if (end == s || (*end != '\0' && !std::isspace(static_cast<unsigned char>(*end)))) {
          return Status::InvalidArgument(where + ": '" + cell + "' is not a number");
        }
        if (first) {
          if (is_ts) {
            lab.timestamp_s = x;
          } else if (x < 0 || std::floor(x) != x) {
            return Status::InvalidArgument(where + ": frame '" + cell + "' must be a non-negative integer");
          } else {
            lab.frame = static_cast<int64_t>(x);
          }
          first = false;
        } else {
          values.push_back(x);
        }
      }
    }
    Status st = value_of(values, &lab);
    if (!st.ok()) return Status::InvalidArgument(where + ": " + st.message());
    out.push_back(std::move(lab));
  }
  return out;
}

}  // namespace mlink::edge
