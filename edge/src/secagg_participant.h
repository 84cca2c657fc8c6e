// An edge's side of secure aggregation for one federated link (protocol/secagg.md): it holds the
// round's input (delta, weight 1) and answers each phase the aggregator opens. The input never
// leaves the edge unmasked. Learner worker thread only (not thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mlink/common/status.h"
#include "mlink/protocol/messages.h"
#include "mlink/protocol/secagg.h"

namespace mlink::edge {

class SecAggParticipant {
 public:
  // With the edge's TLS key and certificate (PEM) its advertised keys are signed; with the CA
  // (PEM) it accepts only rosters whose every entry is signed by a distinct edge of that CA, so an
  // aggregator cannot put its own keys in a neighbour's place. Empty strings turn either off.
  SecAggParticipant(std::string key_pem = "", std::string certificate_pem = "",
                    std::string ca_pem = "")
      : key_pem_(std::move(key_pem)),
        certificate_pem_(std::move(certificate_pem)),
        ca_pem_(std::move(ca_pem)) {}

  // Starts taking part in `round` with `delta`; returns the key advertisement to send. Replaces
  // any round in progress.
  Result<protocol::SecAgg> Begin(const std::string& link_id, uint64_t round,
                                 std::vector<float> delta);

  // Answers one message of the round in progress: the payload to send back, or none (a message
  // for another round). `finished` is set when this answer completes the edge's part.
  Result<std::optional<protocol::SecAgg>> OnMessage(const protocol::SecAgg& message,
                                                    bool* finished);

  void Reset() { client_.reset(); }
  bool active() const { return client_ != nullptr; }
  // Input values that were beyond the round's clip bound and were clipped to it (last round).
  int clipped() const { return clipped_; }

 private:
  std::string key_pem_, certificate_pem_, ca_pem_;
  std::string link_id_;
  uint64_t round_ = 0;
  std::vector<float> input_;  // delta followed by the weight
  double clip_ = 0;
  int clipped_ = 0;
  std::unique_ptr<protocol::secagg::Client> client_;
};

}  // namespace mlink::edge
