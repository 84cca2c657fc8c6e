// Federation messages (wire version kProtocolVersion). Every WebSocket binary frame carries one
// Envelope: a fixed header (magic, version, type, body length) followed by the cereal
// portable-binary body of exactly one message below. See protocol/README.md for the byte layout
// and the version rule. Plain structs: no Beast or torch types.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace mlink::protocol {

enum class MessageType : uint16_t {
  kHello = 1,       // edge -> cloud, first message on a connection
  kWelcome = 2,     // cloud -> edge, answer to Hello
  kGlobalLink = 3,  // cloud -> edge, the current global parameters of a link (round r)
  kUpdate = 4,      // edge -> cloud, a local delta computed from round r's global parameters
  kAck = 5,         // cloud -> edge, the update is durably stored and will be counted
  kReject = 6,      // cloud -> edge, the update (or Hello) was refused; state unchanged
  kError = 7,       // either way, a protocol-level error; the sender closes afterwards
  kSecAgg = 8,      // either way, one secure-aggregation message of a link (protocol/secagg.md)
};

// Why something was refused. Stable numbers: they appear in logs, metrics and on the wire.
enum class RejectReason : uint16_t {
  kMalformed = 1,         // undecodable frame, bad header, truncated body
  kUnknownType = 2,
  kVersionMismatch = 3,
  kSpecMismatch = 4,      // spec hash differs from the aggregator's link
  kUnknownLink = 5,
  kNotAuthorized = 6,     // edge identity not allowed for that link
  kWrongShape = 7,        // parameter count differs from the link's
  kNonFinite = 8,         // NaN or Inf in the delta
  kRoundNotOpen = 9,      // base round is not the open round
  kDuplicate = 10,        // this edge already sent an update for this link and round
  kTooLarge = 11,         // over a hard limit
  kNormTooLarge = 12,     // delta norm above the configured clip bound (when rejecting)
  kInternal = 13,
  kNotHello = 14,         // first message was not Hello
  kSecAgg = 15,           // a secure-aggregation message or round was refused (see the text)
};
const char* RejectReasonName(RejectReason r);

struct Subscription {
  std::string link_id;
  uint64_t spec_hash = 0;
};

struct Hello {
  uint32_t protocol_version = 0;
  std::string edge_id;  // informational; the authoritative identity is the certificate subject
  std::vector<Subscription> links;
};

struct Welcome {
  uint32_t protocol_version = 0;
  std::string edge_id;                 // identity the aggregator took from the certificate
  std::vector<std::string> accepted;   // subscribed links this edge may use
  std::vector<std::string> refused;    // with a reason each in `refused_reasons`
  std::vector<std::string> refused_reasons;
};

struct GlobalLink {
  std::string link_id;
  uint64_t spec_hash = 0;
  uint64_t round = 0;                // the round now open; updates must name it as base_round
  std::vector<float> params;         // Theta_round, flat
  uint64_t checksum = 0;             // Fnv1a64 over the params' bytes
};

struct Update {
  std::string link_id;
  uint64_t base_round = 0;
  std::vector<float> delta;          // Delta_k = Theta_local - Theta_base_round
  uint64_t samples = 0;              // local samples used (sample-weighted aggregation)
  double loss = 0;                   // local training loss (reported in metrics)
  double metric = 0;                 // local validation performance p
  uint64_t checksum = 0;             // Fnv1a64 over the delta's bytes
};

struct Ack {
  std::string link_id;
  uint64_t round = 0;
  uint32_t received = 0;             // updates the round holds now, this one included
};

struct Reject {
  std::string link_id;               // may be empty (e.g. a Hello)
  uint64_t round = 0;
  RejectReason reason = RejectReason::kMalformed;
  std::string text;
};

struct Error {
  RejectReason reason = RejectReason::kMalformed;
  std::string text;
};

// A secure-aggregation message of one link: `payload` is secagg::Serialize of one
// secagg::Message (protocol/secagg.md), whose context names the link and round again.
struct SecAgg {
  std::string link_id;
  std::vector<uint8_t> payload;
};

using Message = std::variant<Hello, Welcome, GlobalLink, Update, Ack, Reject, Error, SecAgg>;
MessageType TypeOf(const Message& m);
const char* MessageTypeName(MessageType t);

}  // namespace mlink::protocol
