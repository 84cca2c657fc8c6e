// Internal: the aggregator's durable state in SQLite (WAL). Every accepted update is committed
// here before it is acknowledged; a round's close (new global parameters, the round counter and
// the removal of its folded updates) is one transaction, so a crash at any point leaves either
// the open round with all its acknowledged updates, or the next round.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mlink/common/sqlite.h"
#include "mlink/common/status.h"

namespace mlink::cloud {

class Store {
 public:
  // Opens or creates `data_dir`/aggregator.db (the folder is created if missing).
  static Result<std::unique_ptr<Store>> Open(const std::string& data_dir);

  struct LinkState {
    uint64_t round = 0;
    std::vector<float> params;
  };
  // The stored state of a link, or a new row at round 0 with `init` params. A stored link whose
  // spec hash differs from the configured one is kFailedPrecondition (never silently reset).
  Result<LinkState> LoadOrInitLink(const std::string& id, const std::string& spec_hash,
                                   const std::vector<float>& init);

  struct StoredUpdate {
    std::string edge;
    uint64_t samples = 0;
    double loss = 0, metric = 0;
    std::vector<float> delta;
  };
  // Calls `fn` with each stored update of (link, round) in arrival order, one row in memory at a
  // time (recovery folds them without holding all K deltas); stops at the first error.
  Status ForEachUpdate(const std::string& link, uint64_t round, const std::function<Status(StoredUpdate)>& fn);
  // kAlreadyExists if (link, round, edge) is stored already.
  Status InsertUpdate(const std::string& link, uint64_t round, const StoredUpdate& update);
  // Group commit: all rows in one transaction (one fsync), all or none.
  struct PendingRow {
    std::string link;
    uint64_t round = 0;
    const StoredUpdate* update = nullptr;
  };
  Status InsertUpdates(const std::vector<PendingRow>& rows);
  Status CloseRound(const std::string& link, uint64_t round, const std::vector<float>& new_params,
                    int num_updates, double duration_s);

  struct RoundRecord {
    uint64_t round = 0;
    int updates = 0;
    double duration_s = 0;
    double closed_at = 0;  // unix seconds
    bool has_metric = false;
    double metric = 0;     // sample-weighted mean of the metric its updates reported
    uint64_t samples = 0;
  };
  // The newest `limit` closed rounds of `link`, newest first.
  Result<std::vector<RoundRecord>> History(const std::string& link, int limit);

 private:
  explicit Store(std::unique_ptr<sql::Database> db) : db_(std::move(db)) {}
  std::unique_ptr<sql::Database> db_;
};

}  // namespace mlink::cloud
