// The one codec for federation frames. Encode never fails; Decode checks the header and every
// size against hard Limits *before* allocating, so a hostile or corrupt frame costs at most the
// frame itself. Thread-safe (pure functions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mlink/common/status.h"
#include "mlink/protocol/messages.h"

namespace mlink::protocol {

struct Limits {
  std::size_t max_message_bytes = 64u << 20;  // whole frame, header included
  std::size_t max_tensor_len = 16u << 20;     // floats in params / delta
  std::size_t max_string_len = 256;           // ids, names
  std::size_t max_text_len = 4096;            // Reject / Error text
  std::size_t max_list_count = 1024;          // subscriptions, accepted/refused lists
};

inline constexpr std::size_t kHeaderBytes = 12;  // "MLNK", u16 version, u16 type, u32 body length

std::vector<uint8_t> Encode(const Message& message);

// Errors are kInvalidArgument (malformed, truncated, trailing bytes, unknown type, bad checksum),
// kOutOfRange (a limit exceeded) or kFailedPrecondition (another protocol version); the message
// names what was wrong. For Update and GlobalLink the checksum is verified.
Result<Message> Decode(const uint8_t* data, std::size_t size, const Limits& limits = Limits());

// The whole frame size (kHeaderBytes + body length) announced by the first `size` >= kHeaderBytes
// bytes of a frame, checked like Decode checks the header (magic, version, type, max_message_bytes),
// so a receiver can size or refuse a frame before the rest of it has arrived.
Result<std::size_t> AnnouncedFrameSize(const uint8_t* data, std::size_t size, const Limits& limits = Limits());

// Maps a Decode error to the reason code sent back in a Reject/Error.
RejectReason ReasonFor(const Status& decode_error);

// Fnv1a64 over a float vector's bytes (the checksum carried by GlobalLink and Update).
uint64_t ParamsChecksum(const std::vector<float>& values);

}  // namespace mlink::protocol
