// A small RAII layer over SQLite: a Database (WAL, busy timeout, schema migrations), prepared
// Statements and Transactions. Every failure is a Status naming the database file and the
// statement.
//
// Thread-safety: a Database and its Statements belong to one thread at a time (SQLite's
// "multi-thread" mode). Components that touch SQLite from several threads own one Database per
// thread, or funnel work through one worker thread (see STYLE.md: no SQLite on I/O threads).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mlink/common/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace mlink::sql {

class Database;

class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based, as in SQLite. Binding copies the value.
  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, int value) { return Bind(index, static_cast<int64_t>(value)); }
  Statement& Bind(int index, double value);
  Statement& Bind(int index, std::string_view text);
  Statement& Bind(int index, const char* text) { return Bind(index, std::string_view(text)); }
  Statement& Bind(int index, const std::string& text) { return Bind(index, std::string_view(text)); }
  Statement& BindBlob(int index, const void* data, std::size_t size);
  Statement& BindNull(int index);

  // Advances one row: true if a row is available, false when done.
  Result<bool> Step();
  // Steps to completion (for INSERT/UPDATE/DELETE), then resets for reuse.
  Status Run();
  // Resets to run again and clears bindings.
  void Reset();

  // Columns are 0-based, valid after Step() returned true.
  int64_t ColumnInt(int col) const;
  double ColumnDouble(int col) const;
  std::string ColumnText(int col) const;
  std::vector<uint8_t> ColumnBlob(int col) const;
  bool ColumnIsNull(int col) const;
  int ColumnCount() const;

 private:
  friend class Database;
  Statement(Database* db, sqlite3_stmt* stmt, std::string sql);

  Database* db_;
  sqlite3_stmt* stmt_;
  std::string sql_;
  Status bind_error_;  // the first failed Bind, reported by Step()
};

class Database {
 public:
  struct Options {
    bool create_if_missing = true;
    bool read_only = false;
    bool wal = true;              // journal_mode=WAL, synchronous=NORMAL (FULL if !wal)
    bool synchronous_full = false;  // synchronous=FULL even in WAL (durable on power loss)
    int busy_timeout_ms = 5000;
    bool check_integrity = true;  // run PRAGMA quick_check on open; corruption is kDataLoss
  };

  // Opens (or creates) the database at `path`. Errors: kNotFound if missing and
  // !create_if_missing; kPermissionDenied for an unwritable file or folder; kDataLoss if the file
  // is not a database or fails its integrity check.
  static Result<std::unique_ptr<Database>> Open(const std::string& path, const Options& options);
  static Result<std::unique_ptr<Database>> Open(const std::string& path) { return Open(path, Options()); }
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs one or more statements that return no rows.
  Status Exec(const std::string& sql);
  Result<Statement> Prepare(const std::string& sql);

  int64_t LastInsertRowId() const;
  int Changes() const;
  const std::string& path() const { return path_; }

  // Schema versioning with PRAGMA user_version. `migrations[i]` takes the schema from version i to
  // i + 1 and runs in its own transaction. A database newer than the code is kFailedPrecondition
  // (never downgraded). Returns the resulting version.
  Result<int> Migrate(const std::vector<std::string>& migrations);
  Result<int> UserVersion();

  // The error of the last failing call, as "<path>: <sqlite message> (<code name>)".
  Status LastError(const std::string& what) const;

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  friend class Statement;
  sqlite3* db_;
  std::string path_;
};

// BEGIN IMMEDIATE on construction via Begin(); ROLLBACK on destruction unless committed.
class Transaction {
 public:
  static Result<Transaction> Begin(Database* db);
  Transaction(Transaction&& other) noexcept : db_(other.db_), done_(other.done_) { other.done_ = true; }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();
  Status Commit();
  Status Rollback();

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_;
  bool done_ = false;
};

}  // namespace mlink::sql
