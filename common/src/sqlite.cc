#include "mlink/common/sqlite.h"

#include <sqlite3.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace mlink::sql {

namespace {

// What every corruption error says: nothing is reset or repaired behind the operator's back.
constexpr char kKeptAsIs[] =
    "It is left as it is: keep it for inspection, then restore it from a backup or move it away to start afresh";

Status FromCode(int rc, const std::string& msg) {
  switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT: return Status::DataLoss(msg);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH: return Status::PermissionDenied(msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return Status::Unavailable(msg);
    case SQLITE_FULL:
    case SQLITE_TOOBIG: return Status::OutOfRange(msg);
    case SQLITE_CONSTRAINT: return Status::AlreadyExists(msg);
    case SQLITE_MISMATCH:
    case SQLITE_RANGE: return Status::InvalidArgument(msg);
    default: return Status::Internal(msg);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------- Database

Result<std::unique_ptr<Database>> Database::Open(const std::string& path, const Options& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  bool exists = fs::exists(path, ec);
  if (!exists && (!options.create_if_missing || options.read_only)) {
    return Status::NotFound("sqlite database " + path + ": no such file");
  }
  if (exists && fs::is_directory(path, ec)) {
    return Status::InvalidArgument("sqlite database " + path + ": is a directory, expected a file");
  }
  if (!exists) {
    fs::path parent = fs::path(path).parent_path();
    if (!parent.empty() && !fs::exists(parent, ec)) {
      return Status::NotFound("sqlite database " + path + ": folder " + parent.string() + " does not exist");
    }
  }
  int flags = SQLITE_OPEN_NOMUTEX;
  flags |= options.read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = "sqlite database " + path + ": cannot open: " +
                      (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc));
    if (raw) sqlite3_close(raw);
    return FromCode(rc, msg);
  }
  sqlite3_extended_result_codes(raw, 1);
  std::unique_ptr<Database> db(new Database(raw, path));
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);

  // The first real read tells whether the file is a database at all.
  {
    auto check = db->Prepare("PRAGMA schema_version");
    Status st = check.ok() ? check->Step().status() : check.status();
    if (st.code() == StatusCode::kDataLoss) {
      return Status::DataLoss("sqlite database " + path + ": not a readable SQLite 3 database (" +
                              sqlite3_errmsg(raw) + "). " + kKeptAsIs);
    }
    if (!st.ok()) return st.WithContext("opening");
  }  // finalised here, so no read transaction stays open

  if (!options.read_only) {
    if (options.wal) {
      MLINK_RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode=WAL"));
      MLINK_RETURN_IF_ERROR(db->Exec(options.synchronous_full ? "PRAGMA synchronous=FULL"
                                                              : "PRAGMA synchronous=NORMAL"));
    } else {
      MLINK_RETURN_IF_ERROR(db->Exec("PRAGMA synchronous=FULL"));
    }
    MLINK_RETURN_IF_ERROR(db->Exec("PRAGMA foreign_keys=ON"));
  }
  if (options.check_integrity && exists) {
    std::string verdict;
    {
      MLINK_ASSIGN_OR_RETURN(Statement q, db->Prepare("PRAGMA quick_check"));
      MLINK_ASSIGN_OR_RETURN(bool row, q.Step());
      verdict = row ? q.ColumnText(0) : "no answer";
    }
    if (verdict != "ok") {
      return Status::DataLoss("sqlite database " + path + ": integrity check failed: " + verdict +
                              "; the file is corrupt. " + kKeptAsIs);
    }
  }
  return db;
}

Database::~Database() {
  if (db_) sqlite3_close_v2(db_);
}

Status Database::LastError(const std::string& what) const {
  int rc = sqlite3_extended_errcode(db_);
  return FromCode(rc, "sqlite database " + path_ + ": " + what + ": " + sqlite3_errmsg(db_) + " (" +
                          sqlite3_errstr(rc) + ")");
}

Status Database::Exec(const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = "sqlite database " + path_ + ": " + (err ? err : sqlite3_errstr(rc)) +
                      " (" + sqlite3_errstr(rc) + ") in: " + sql.substr(0, 200);
    sqlite3_free(err);
    return FromCode(rc, msg);
  }
  return Status::Ok();
}

Result<Statement> Database::Prepare(const std::string& sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return LastError("preparing \"" + sql.substr(0, 200) + "\"");
  return Statement(this, stmt, sql);
}

int64_t Database::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }
int Database::Changes() const { return sqlite3_changes(db_); }

Result<int> Database::UserVersion() {
  MLINK_ASSIGN_OR_RETURN(Statement s, Prepare("PRAGMA user_version"));
  MLINK_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return Status::Internal("sqlite database " + path_ + ": PRAGMA user_version gave no row");
  return static_cast<int>(s.ColumnInt(0));
}

Result<int> Database::Migrate(const std::vector<std::string>& migrations) {
  MLINK_ASSIGN_OR_RETURN(int version, UserVersion());
  const int target = static_cast<int>(migrations.size());
  if (version > target) {
    return Status::FailedPrecondition("sqlite database " + path_ + ": schema version " +
                                      std::to_string(version) + " is newer than this program knows (" +
                                      std::to_string(target) + "); refusing to use it");
  }
  while (version < target) {
    MLINK_ASSIGN_OR_RETURN(Transaction tx, Transaction::Begin(this));
    Status st = Exec(migrations[version]);
    if (!st.ok()) return st.WithContext("migration to schema version " + std::to_string(version + 1));
    MLINK_RETURN_IF_ERROR(Exec("PRAGMA user_version=" + std::to_string(version + 1)));
    MLINK_RETURN_IF_ERROR(tx.Commit());
    ++version;
  }
  return version;
}

// --------------------------------------------------------------------------------- Statement

Statement::Statement(Database* db, sqlite3_stmt* stmt, std::string sql)
    : db_(db), stmt_(stmt), sql_(std::move(sql)) {}

Statement::Statement(Statement&& o) noexcept
    : db_(o.db_), stmt_(o.stmt_), sql_(std::move(o.sql_)), bind_error_(std::move(o.bind_error_)) {
  o.stmt_ = nullptr;
}

Statement& Statement::operator=(Statement&& o) noexcept {
  if (this != &o) {
    if (stmt_) sqlite3_finalize(stmt_);
    db_ = o.db_;
    stmt_ = o.stmt_;
    sql_ = std::move(o.sql_);
    bind_error_ = std::move(o.bind_error_);
    o.stmt_ = nullptr;
  }
  return *this;
}

Statement::~Statement() {
  if (stmt_) sqlite3_finalize(stmt_);
}

#define MLINK_BIND(call)                                                                       \
  int rc = (call);                                                                             \
  if (rc != SQLITE_OK && bind_error_.ok())                                                     \
    bind_error_ = db_->LastError("binding parameter " + std::to_string(index) + " of \"" +    \
                                 sql_.substr(0, 120) + "\"");                                  \
  return *this;

Statement& Statement::Bind(int index, int64_t value) { MLINK_BIND(sqlite3_bind_int64(stmt_, index, value)) }
Statement& Statement::Bind(int index, double value) { MLINK_BIND(sqlite3_bind_double(stmt_, index, value)) }
Statement& Statement::Bind(int index, std::string_view text) {
  MLINK_BIND(sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8))
}
Statement& Statement::BindBlob(int index, const void* data, std::size_t size) {
  // A zero-length blob must still be a blob, not NULL.
  static const char kEmpty = 0;
  MLINK_BIND(sqlite3_bind_blob64(stmt_, index, size ? data : &kEmpty, size, SQLITE_TRANSIENT))
}
Statement& Statement::BindNull(int index) { MLINK_BIND(sqlite3_bind_null(stmt_, index)) }
#undef MLINK_BIND

Result<bool> Statement::Step() {
  if (!bind_error_.ok()) return bind_error_;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Status st = db_->LastError("running \"" + sql_.substr(0, 200) + "\"");
  sqlite3_reset(stmt_);
  return st;
}

Status Statement::Run() {
  MLINK_ASSIGN_OR_RETURN(bool row, Step());
  while (row) {
    MLINK_ASSIGN_OR_RETURN(row, Step());
  }
  Reset();
  return Status::Ok();
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_error_ = Status::Ok();
}

int64_t Statement::ColumnInt(int col) const { return sqlite3_column_int64(stmt_, col); }
double Statement::ColumnDouble(int col) const { return sqlite3_column_double(stmt_, col); }
std::string Statement::ColumnText(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)) : std::string();
}
std::vector<uint8_t> Statement::ColumnBlob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  int n = sqlite3_column_bytes(stmt_, col);
  if (!p || n <= 0) return {};
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}
bool Statement::ColumnIsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
int Statement::ColumnCount() const { return sqlite3_column_count(stmt_); }

// ------------------------------------------------------------------------------- Transaction

Result<Transaction> Transaction::Begin(Database* db) {
  MLINK_RETURN_IF_ERROR(db->Exec("BEGIN IMMEDIATE"));
  return Transaction(db);
}

Transaction::~Transaction() {
  if (!done_) (void)db_->Exec("ROLLBACK");
}

Status Transaction::Commit() {
  if (done_) return Status::FailedPrecondition("transaction already finished");
  Status st = db_->Exec("COMMIT");
  if (st.ok()) done_ = true;
  return st;
}

Status Transaction::Rollback() {
  if (done_) return Status::FailedPrecondition("transaction already finished");
  done_ = true;
  return db_->Exec("ROLLBACK");
}

}  // namespace mlink::sql
