#include "mlink/protocol/messages.h"

#include <type_traits>

namespace mlink::protocol {

const char* RejectReasonName(RejectReason r) {
  switch (r) {
    case RejectReason::kMalformed:
      return "malformed";
    case RejectReason::kUnknownType:
      return "unknown_type";
    case RejectReason::kVersionMismatch:
      return "version_mismatch";
    case RejectReason::kSpecMismatch:
      return "spec_mismatch";
    case RejectReason::kUnknownLink:
      return "unknown_link";
    case RejectReason::kNotAuthorized:
      return "not_authorized";
    case RejectReason::kWrongShape:
      return "wrong_shape";
    case RejectReason::kNonFinite:
      return "non_finite";
    case RejectReason::kRoundNotOpen:
      return "round_not_open";
    case RejectReason::kDuplicate:
      return "duplicate";
    case RejectReason::kTooLarge:
      return "too_large";
    case RejectReason::kNormTooLarge:
      return "norm_too_large";
    case RejectReason::kInternal:
      return "internal";
    case RejectReason::kNotHello:
      return "not_hello";
    case RejectReason::kSecAgg:
      return "secagg";
  }
  return "unknown";  // a code from a newer peer; the wire carries any uint16
}

MessageType TypeOf(const Message& m) {
  return std::visit(
      [](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Hello>) {
          return MessageType::kHello;
        } else if constexpr (std::is_same_v<T, Welcome>) {
          return MessageType::kWelcome;
        } else if constexpr (std::is_same_v<T, GlobalLink>) {
          return MessageType::kGlobalLink;
        } else if constexpr (std::is_same_v<T, Update>) {
          return MessageType::kUpdate;
        } else if constexpr (std::is_same_v<T, Ack>) {
          return MessageType::kAck;
        } else if constexpr (std::is_same_v<T, Reject>) {
          return MessageType::kReject;
        } else if constexpr (std::is_same_v<T, Error>) {
          return MessageType::kError;
        } else {
          static_assert(std::is_same_v<T, SecAgg>, "every Message alternative needs a MessageType");
          return MessageType::kSecAgg;
        }
      },
      m);
}

const char* MessageTypeName(MessageType t) {
  switch (t) {
    case MessageType::kHello:
      return "Hello";
    case MessageType::kWelcome:
      return "Welcome";
    case MessageType::kGlobalLink:
      return "GlobalLink";
    case MessageType::kUpdate:
      return "Update";
    case MessageType::kAck:
      return "Ack";
    case MessageType::kReject:
      return "Reject";
    case MessageType::kError:
      return "Error";
    case MessageType::kSecAgg:
      return "SecAgg";
  }
  return "unknown";
}

}  // namespace mlink::protocol
