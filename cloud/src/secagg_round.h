// One secure-aggregation round of one link on the aggregator (protocol/secagg.md): it numbers the
// edges in the order their keys arrive, drives the four phases with their closing rules, and
// yields the sum of the survivors' inputs. Each edge's input is (w * delta, w): its weighted delta
// followed by its weight (1 for `mean`, its samples for `sample_weighted`), so the sum carries the
// total weight and the aggregator never sees a single edge's weight or delta.
//
// Phases close as follows. Key advertising: once `min_edges` edges advertised, or at the round
// deadline with at least `min_clients` (max(quorum, threshold + 1)); below that the deadline is
// extended. Sharing, masking and unmasking: once every edge of the phase answered, or
// `phase_timeout_s` after the phase opened, whatever arrived by then (a phase that ends with
// fewer than min_clients fails the round).
//
// Network-independent and worker-thread only (not thread-safe). Holds no input in the clear: only
// the secagg::Server's running masked sum.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mlink/cloud/options.h"
#include "mlink/common/status.h"
#include "mlink/protocol/secagg.h"

namespace mlink::cloud {

class SecAggRound {
 public:
  using Clock = std::chrono::steady_clock;
  struct Outgoing {
    std::string edge;  // certificate identity
    protocol::secagg::Message message;
  };
  enum class State { kRunning, kDone, kFailed };

  // `length`: the link's parameter count + 1 (the weight).
  SecAggRound(const std::string& link_id, uint64_t round, const LinkOptions& options,
              uint32_t length, Clock::time_point now);

  // One message from `edge`. An error refuses that message and changes nothing; the caller
  // sends it back as a Reject.
  Status OnMessage(const std::string& edge, protocol::secagg::Message message,
                   Clock::time_point now, std::vector<Outgoing>* out);
  // Closes the phases that are complete or past their deadline.
  void Advance(Clock::time_point now, std::vector<Outgoing>* out);

  State state() const { return state_; }
  const Status& failure() const { return failure_; }                           // kFailed
  const protocol::secagg::AggregateResult& result() const { return result_; }  // kDone
  std::vector<std::string> Edges(const std::vector<uint32_t>& indices) const;
  std::vector<std::string> participants() const;  // every edge that advertised keys
  Clock::time_point deadline() const { return deadline_; }
  const char* phase_name() const;

 private:
  enum class Phase { kAdvertising, kSharing, kMasking, kUnmasking, kOver };
  void Fail(Status status);
  void CloseAdvertising(Clock::time_point now, std::vector<Outgoing>* out);
  Clock::time_point PhaseDeadline(Clock::time_point now) const;

  std::string link_id_;
  uint64_t round_;
  LinkOptions options_;
  uint32_t length_;
  Phase phase_ = Phase::kAdvertising;
  State state_ = State::kRunning;
  Status failure_;
  Clock::time_point deadline_;
  std::map<std::string, uint32_t> index_of_;  // edge identity -> index
  std::map<uint32_t, std::string> edge_of_;   // index -> edge identity
  std::vector<protocol::secagg::AdvertiseKeys> advertised_;
  std::unique_ptr<protocol::secagg::Server> probe_;   // checks advertisements as they come
  std::unique_ptr<protocol::secagg::Server> server_;  // from the close of advertising
  std::size_t expected_ = 0;                          // answers the open phase waits for
  std::size_t answered_ = 0;
  protocol::secagg::AggregateResult result_;
};

}  // namespace mlink::cloud
