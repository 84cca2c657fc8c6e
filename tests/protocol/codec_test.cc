#include "mlink/protocol/codec.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "mlink/protocol/endpoint.h"
#include "mlink/protocol/messages.h"

namespace mlink::protocol {
namespace {

using Bytes = std::vector<uint8_t>;

// Frame offsets (header is 12 bytes, the body starts with the 0x01 endianness marker).
constexpr std::size_t kBodyStart = kHeaderBytes;
constexpr std::size_t kFirstFieldStart = kBodyStart + 1;

std::vector<float> Floats(std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = 0.25f * static_cast<float>(i) - 3.0f;
  return v;
}

Update SampleUpdate(std::size_t n = 5) {
  Update u;
  u.link_id = "detector";
  u.base_round = 7;
  u.delta = Floats(n);
  u.samples = 1234;
  u.loss = 0.125;
  u.metric = 0.875;
  u.checksum = ParamsChecksum(u.delta);
  return u;
}

GlobalLink SampleGlobalLink() {
  GlobalLink g;
  g.link_id = "classifier";
  g.spec_hash = 0xfedcba9876543210ULL;
  g.round = 42;
  g.params = Floats(9);
  g.checksum = ParamsChecksum(g.params);
  return g;
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

template <typename T>
T RoundTrip(const T& in) {
  Bytes frame = Encode(Message(in));
  Result<Message> out = Decode(frame.data(), frame.size());
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return T();
  EXPECT_TRUE(std::holds_alternative<T>(*out));
  if (!std::holds_alternative<T>(*out)) return T();
  return std::get<T>(*out);
}

void SetU64(Bytes* frame, std::size_t offset, uint64_t v) {
  for (int i = 0; i < 8; ++i) (*frame)[offset + i] = static_cast<uint8_t>(v >> (8 * i));
}

void SetBodyLength(Bytes* frame, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*frame)[8 + i] = static_cast<uint8_t>(v >> (8 * i));
}

// Offset of Update.delta's element count in an encoded Update frame.
std::size_t UpdateDeltaCountOffset(const Update& u) {
  return kFirstFieldStart + 8 + u.link_id.size() + 8;
}

// ---------------------------------------------------------------------------------------------
// Round trips.

TEST(CodecTest, HelloRoundTrip) {
  Hello in;
  in.protocol_version = kProtocolVersion;
  in.edge_id = "edge-07";
  in.links = {{"detector", 0x1122334455667788ULL}, {"classifier", 0}, {"", ~0ULL}};
  Hello out = RoundTrip(in);
  EXPECT_EQ(out.protocol_version, in.protocol_version);
  EXPECT_EQ(out.edge_id, in.edge_id);
  ASSERT_EQ(out.links.size(), in.links.size());
  for (std::size_t i = 0; i < in.links.size(); ++i) {
    EXPECT_EQ(out.links[i].link_id, in.links[i].link_id);
    EXPECT_EQ(out.links[i].spec_hash, in.links[i].spec_hash);
  }
}

TEST(CodecTest, WelcomeRoundTrip) {
  Welcome in;
  in.protocol_version = kProtocolVersion;
  in.edge_id = "CN=edge-07";
  in.accepted = {"detector", "classifier"};
  in.refused = {"segmenter"};
  in.refused_reasons = {"spec_mismatch: spec hash differs from the aggregator's"};
  Welcome out = RoundTrip(in);
  EXPECT_EQ(out.protocol_version, in.protocol_version);
  EXPECT_EQ(out.edge_id, in.edge_id);
  EXPECT_EQ(out.accepted, in.accepted);
  EXPECT_EQ(out.refused, in.refused);
  EXPECT_EQ(out.refused_reasons, in.refused_reasons);
}

TEST(CodecTest, GlobalLinkRoundTrip) {
  GlobalLink in = SampleGlobalLink();
  GlobalLink out = RoundTrip(in);
  EXPECT_EQ(out.link_id, in.link_id);
  EXPECT_EQ(out.spec_hash, in.spec_hash);
  EXPECT_EQ(out.round, in.round);
  EXPECT_TRUE(BitEqual(out.params, in.params));
  EXPECT_EQ(out.checksum, in.checksum);
}

TEST(CodecTest, UpdateRoundTrip) {
  Update in = SampleUpdate();
  Update out = RoundTrip(in);
  EXPECT_EQ(out.link_id, in.link_id);
  EXPECT_EQ(out.base_round, in.base_round);
  EXPECT_TRUE(BitEqual(out.delta, in.delta));
  EXPECT_EQ(out.samples, in.samples);
  EXPECT_EQ(out.loss, in.loss);
  EXPECT_EQ(out.metric, in.metric);
  EXPECT_EQ(out.checksum, in.checksum);
}

TEST(CodecTest, UpdateCarriesNonFiniteValuesBitExactly) {
  // Refusing NaN/Inf is the aggregator's job (kNonFinite); the codec must not alter them.
  Update in = SampleUpdate();
  in.delta = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
              -std::numeric_limits<float>::infinity(), -0.0f,
              std::numeric_limits<float>::denorm_min()};
  in.checksum = ParamsChecksum(in.delta);
  in.loss = std::numeric_limits<double>::quiet_NaN();
  Update out = RoundTrip(in);
  EXPECT_TRUE(BitEqual(out.delta, in.delta));
  EXPECT_TRUE(std::isnan(out.loss));
}

TEST(CodecTest, AckRoundTrip) {
  Ack in;
  in.link_id = "detector";
  in.round = 99;
  in.received = 3;
  Ack out = RoundTrip(in);
  EXPECT_EQ(out.link_id, in.link_id);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.received, in.received);
}

TEST(CodecTest, RejectRoundTrip) {
  Reject in;
  in.link_id = "detector";
  in.round = 5;
  in.reason = RejectReason::kDuplicate;
  in.text = "edge-07 already sent an update for detector round 5";
  Reject out = RoundTrip(in);
  EXPECT_EQ(out.link_id, in.link_id);
  EXPECT_EQ(out.round, in.round);
  EXPECT_EQ(out.reason, in.reason);
  EXPECT_EQ(out.text, in.text);
}

TEST(CodecTest, ErrorRoundTrip) {
  Error in;
  in.reason = RejectReason::kNotHello;
  in.text = "the first message must be Hello";
  Error out = RoundTrip(in);
  EXPECT_EQ(out.reason, in.reason);
  EXPECT_EQ(out.text, in.text);
}

TEST(CodecTest, DefaultConstructedMessagesRoundTrip) {
  // Empty vectors still need their checksum: Fnv1a64 of no bytes is the FNV offset basis.
  GlobalLink empty_global;
  empty_global.checksum = ParamsChecksum({});
  Update empty_update;
  empty_update.checksum = ParamsChecksum({});
  EXPECT_EQ(ParamsChecksum({}), 0xcbf29ce484222325ULL);
  for (const Message& m :
       {Message(Hello{}), Message(Welcome{}), Message(empty_global), Message(empty_update),
        Message(Ack{}), Message(Reject{}), Message(Error{}), Message(SecAgg{})}) {
    Bytes frame = Encode(m);
    Result<Message> out = Decode(frame.data(), frame.size());
    ASSERT_TRUE(out.ok()) << MessageTypeName(TypeOf(m)) << ": " << out.status();
    EXPECT_EQ(out->index(), m.index());
  }
}

// ---------------------------------------------------------------------------------------------
// Byte layout.

TEST(CodecTest, HeaderLayoutIsLittleEndian) {
  Bytes frame = Encode(Message(SampleUpdate()));
  ASSERT_GE(frame.size(), kHeaderBytes + 1);
  EXPECT_EQ(std::string(frame.begin(), frame.begin() + 4), "MLNK");
  EXPECT_EQ(frame[4] | (frame[5] << 8), static_cast<int>(kProtocolVersion));
  EXPECT_EQ(frame[6] | (frame[7] << 8), static_cast<int>(MessageType::kUpdate));
  const uint32_t body =
      frame[8] | (frame[9] << 8) | (frame[10] << 16) | (static_cast<uint32_t>(frame[11]) << 24);
  EXPECT_EQ(body, frame.size() - kHeaderBytes);
  EXPECT_EQ(frame[kBodyStart], 1);  // little-endian marker
}

TEST(CodecTest, AckGoldenBytes) {
  // Pins the wire format: a change here is an incompatible change (bump kProtocolVersion).
  Ack ack;
  ack.link_id = "ab";
  ack.round = 0x0102;
  ack.received = 3;
  // clang-format off
  const Bytes expected = {
      'M', 'L', 'N', 'K', 1, 0, 5, 0, 23, 0, 0, 0,  // header: magic, version 1, type 5, 23 bytes
      1,                                            // little-endian marker
      2, 0, 0, 0, 0, 0, 0, 0, 'a', 'b',             // link_id: u64 length + bytes
      0x02, 0x01, 0, 0, 0, 0, 0, 0,                 // round: u64
      3, 0, 0, 0,                                   // received: u32
  };
  // clang-format on
  ASSERT_EQ(kProtocolVersion, 1u);
  EXPECT_EQ(Encode(Message(ack)), expected);
}

// ---------------------------------------------------------------------------------------------
// Malformed frames.

TEST(CodecTest, EveryTruncatedPrefixFailsCleanly) {
  Bytes frame = Encode(Message(SampleUpdate()));
  for (std::size_t len = 0; len < frame.size(); ++len) {
    Bytes prefix(frame.begin(), frame.begin() + len);
    Result<Message> r = Decode(prefix.data(), prefix.size());
    ASSERT_FALSE(r.ok()) << "prefix of " << len << " bytes decoded";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << len << ": " << r.status();
    EXPECT_EQ(ReasonFor(r.status()), RejectReason::kMalformed);
  }
  EXPECT_FALSE(Decode(nullptr, 0).ok());
}

TEST(CodecTest, TruncatedBodyWithPatchedLengthFailsCleanly) {
  // The header agrees with the frame size, but the body itself ends early.
  Bytes frame = Encode(Message(SampleUpdate()));
  for (std::size_t len = kHeaderBytes; len < frame.size(); ++len) {
    Bytes prefix(frame.begin(), frame.begin() + len);
    SetBodyLength(&prefix, static_cast<uint32_t>(len - kHeaderBytes));
    Result<Message> r = Decode(prefix.data(), prefix.size());
    ASSERT_FALSE(r.ok()) << "body of " << len - kHeaderBytes << " bytes decoded";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
  }
}

TEST(CodecTest, TrailingBytesAreRejected) {
  Bytes frame = Encode(Message(SampleUpdate()));
  frame.push_back(0);
  Result<Message> r = Decode(frame.data(), frame.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);

  // Also when the header's body length covers the extra byte.
  SetBodyLength(&frame, static_cast<uint32_t>(frame.size() - kHeaderBytes));
  r = Decode(frame.data(), frame.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("trailing"), std::string::npos) << r.status();
}

TEST(CodecTest, BadMagicIsRejected) {
  Bytes frame = Encode(Message(Ack{}));
  frame[0] = 'X';
  Result<Message> r = Decode(frame.data(), frame.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("magic"), std::string::npos) << r.status();
  EXPECT_EQ(ReasonFor(r.status()), RejectReason::kMalformed);
}

TEST(CodecTest, OtherVersionIsFailedPrecondition) {
  Bytes frame = Encode(Message(Hello{}));
  const uint16_t other = static_cast<uint16_t>(kProtocolVersion + 1);
  frame[4] = static_cast<uint8_t>(other);
  frame[5] = static_cast<uint8_t>(other >> 8);
  Result<Message> r = Decode(frame.data(), frame.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find(std::to_string(other)), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find(std::to_string(kProtocolVersion)), std::string::npos);
  EXPECT_EQ(ReasonFor(r.status()), RejectReason::kVersionMismatch);
}

TEST(CodecTest, UnknownTypeIsRejected) {
  for (uint16_t type : {0, 9, 99, 0xffff}) {
    Bytes frame = Encode(Message(Ack{}));
    frame[6] = static_cast<uint8_t>(type);
    frame[7] = static_cast<uint8_t>(type >> 8);
    Result<Message> r = Decode(frame.data(), frame.size());
    ASSERT_FALSE(r.ok()) << type;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(ReasonFor(r.status()), RejectReason::kUnknownType) << r.status();
  }
}

TEST(CodecTest, BadEndiannessMarkerIsRejected) {
  Bytes frame = Encode(Message(Ack{}));
  for (uint8_t marker : {0, 2, 0xff}) {
    frame[kBodyStart] = marker;
    Result<Message> r = Decode(frame.data(), frame.size());
    ASSERT_FALSE(r.ok()) << static_cast<int>(marker);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(CodecTest, HugeClaimedVectorLengthFailsFastWithoutAllocating) {
  const Update u = SampleUpdate();
  const Bytes good = Encode(Message(u));
  Limits unlimited_tensor;
  unlimited_tensor.max_tensor_len = std::numeric_limits<std::size_t>::max();
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t claimed : {1ULL << 40, 1ULL << 62, 1ULL << 63, ~0ULL}) {
    Bytes frame = good;
    SetU64(&frame, UpdateDeltaCountOffset(u), claimed);
    // Default limits: over max_tensor_len.
    Result<Message> r = Decode(frame.data(), frame.size());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange) << r.status();
    EXPECT_NE(r.status().message().find("Update.delta"), std::string::npos) << r.status();
    EXPECT_EQ(ReasonFor(r.status()), RejectReason::kTooLarge);
    // Even with no tensor limit, the claim must be checked against the bytes left (no overflow).
    r = Decode(frame.data(), frame.size(), unlimited_tensor);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(CodecTest, TensorOverLimitIsOutOfRange) {
  Limits tiny;
  tiny.max_tensor_len = 4;
  Bytes frame = Encode(Message(SampleUpdate(5)));
  Result<Message> r = Decode(frame.data(), frame.size(), tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(r.status().message(), "Update.delta has 5 values, limit 4");
  frame = Encode(Message(SampleUpdate(4)));
  EXPECT_TRUE(Decode(frame.data(), frame.size(), tiny).ok());
}

TEST(CodecTest, StringOverLimitIsOutOfRange) {
  Limits tiny;
  tiny.max_string_len = 4;
  tiny.max_text_len = 8;

  Ack ack;
  ack.link_id = "abcde";
  Bytes frame = Encode(Message(ack));
  Result<Message> r = Decode(frame.data(), frame.size(), tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(r.status().message(), "Ack.link_id has 5 bytes, limit 4");

  ack.link_id = "abcd";  // exactly at the limit
  frame = Encode(Message(ack));
  EXPECT_TRUE(Decode(frame.data(), frame.size(), tiny).ok());

  // Reject/Error text uses max_text_len.
  Reject rej;
  rej.text = "12345678";
  frame = Encode(Message(rej));
  EXPECT_TRUE(Decode(frame.data(), frame.size(), tiny).ok());
  rej.text = "123456789";
  frame = Encode(Message(rej));
  r = Decode(frame.data(), frame.size(), tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(r.status().message().find("Reject.text"), std::string::npos) << r.status();

  // A nested string names its position.
  Hello hello;
  hello.links = {{"ok", 1}, {"too-long", 2}};
  frame = Encode(Message(hello));
  r = Decode(frame.data(), frame.size(), tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "Hello.links[1].link_id has 8 bytes, limit 4");
}

TEST(CodecTest, HugeClaimedStringLengthFailsFast) {
  Ack ack;
  ack.link_id = "x";
  Bytes frame = Encode(Message(ack));
  SetU64(&frame, kFirstFieldStart, 1ULL << 40);
  Result<Message> r = Decode(frame.data(), frame.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange) << r.status();
}

TEST(CodecTest, ListCountOverLimitIsOutOfRange) {
  Limits tiny;
  tiny.max_list_count = 2;
  Hello hello;
  hello.links = {{"a", 1}, {"b", 2}, {"c", 3}};
  Bytes frame = Encode(Message(hello));
  Result<Message> r = Decode(frame.data(), frame.size(), tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(r.status().message(), "Hello.links has 3 entries, limit 2");
  EXPECT_EQ(ReasonFor(r.status()), RejectReason::kTooLarge);

  Welcome welcome;
  welcome.accepted = {"a", "b", "c"};
  frame = Encode(Message(welcome));
  r = Decode(frame.data(), frame.size(), tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(r.status().message().find("Welcome.accepted"), std::string::npos) << r.status();

  // A forged count within the limit but beyond what the body can hold: no allocation, rejected.
  Limits loose;
  loose.max_list_count = std::numeric_limits<std::size_t>::max();
  hello.links.clear();
  frame = Encode(Message(hello));
  const std::size_t count_offset = kFirstFieldStart + 4 + 8 + hello.edge_id.size();
  SetU64(&frame, count_offset, 1ULL << 50);
  r = Decode(frame.data(), frame.size(), loose);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
}

TEST(CodecTest, WelcomeRefusedListsMustPair) {
  Welcome welcome;
  welcome.refused = {"a", "b"};
  welcome.refused_reasons = {"only one"};
  Bytes frame = Encode(Message(welcome));
  Result<Message> r = Decode(frame.data(), frame.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST(CodecTest, ChecksumMismatchIsRejected) {
  Update u = SampleUpdate();
  u.checksum ^= 1;
  Bytes frame = Encode(Message(u));
  Result<Message> r = Decode(frame.data(), frame.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("checksum mismatch"), std::string::npos) << r.status();
  EXPECT_EQ(ReasonFor(r.status()), RejectReason::kMalformed);

  // A flipped bit in the values is caught the same way.
  frame = Encode(Message(SampleUpdate()));
  frame[UpdateDeltaCountOffset(SampleUpdate()) + 8] ^= 0x01;
  r = Decode(frame.data(), frame.size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("checksum mismatch"), std::string::npos) << r.status();

  GlobalLink g = SampleGlobalLink();
  g.checksum = 0;
  frame = Encode(Message(g));
  r = Decode(frame.data(), frame.size());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("checksum mismatch"), std::string::npos) << r.status();
}

TEST(CodecTest, EncodeDoesNotRecomputeChecksum) {
  Update u = SampleUpdate();
  u.checksum = 12345;
  Bytes frame = Encode(Message(u));
  uint64_t carried = 0;
  for (int i = 0; i < 8; ++i)
    carried |= static_cast<uint64_t>(frame[frame.size() - 8 + i]) << (8 * i);
  EXPECT_EQ(carried, 12345u);
}

TEST(CodecTest, FrameOverMaxMessageBytesIsOutOfRange) {
  Limits tiny;
  tiny.max_message_bytes = 64;
  Bytes frame = Encode(Message(SampleUpdate(100)));
  ASSERT_GT(frame.size(), 64u);
  Result<Message> r = Decode(frame.data(), frame.size(), tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(r.status().message().find("limit 64"), std::string::npos) << r.status();
  EXPECT_EQ(ReasonFor(r.status()), RejectReason::kTooLarge);
}

// A receiver sizes (or refuses) a frame from its header alone, before the body has arrived.
TEST(CodecTest, AnnouncedFrameSizeComesFromTheHeaderAlone) {
  Bytes frame = Encode(Message(SampleUpdate(100)));
  Result<std::size_t> size = AnnouncedFrameSize(frame.data(), kHeaderBytes);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, frame.size());
  EXPECT_EQ(AnnouncedFrameSize(frame.data(), kHeaderBytes - 1).status().code(), StatusCode::kInvalidArgument);
  Limits tiny;
  tiny.max_message_bytes = 64;
  Result<std::size_t> big = AnnouncedFrameSize(frame.data(), kHeaderBytes, tiny);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(ReasonFor(big.status()), RejectReason::kTooLarge);
  Bytes magic = frame;
  magic[0] = 'X';
  EXPECT_EQ(ReasonFor(AnnouncedFrameSize(magic.data(), magic.size()).status()), RejectReason::kMalformed);
  Bytes version = frame;
  version[4] = 9;
  EXPECT_EQ(ReasonFor(AnnouncedFrameSize(version.data(), version.size()).status()), RejectReason::kVersionMismatch);
  Bytes type = frame;
  type[6] = 99;
  EXPECT_EQ(ReasonFor(AnnouncedFrameSize(type.data(), type.size()).status()), RejectReason::kUnknownType);
}

TEST(CodecTest, RandomCorruptionNeverCrashes) {
  std::mt19937 rng(12345);
  const Bytes frames[] = {Encode(Message(SampleUpdate())), Encode(Message(SampleGlobalLink())),
                          Encode(Message(Hello{kProtocolVersion, "e", {{"l", 1}}}))};
  Limits tiny;
  tiny.max_tensor_len = 64;
  for (const Bytes& good : frames) {
    for (int trial = 0; trial < 2000; ++trial) {
      Bytes frame = good;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) {
        frame[kHeaderBytes + rng() % (frame.size() - kHeaderBytes)] = static_cast<uint8_t>(rng());
      }
      Result<Message> r = Decode(frame.data(), frame.size(), tiny);
      if (!r.ok()) {
        EXPECT_TRUE(r.status().code() == StatusCode::kInvalidArgument ||
                    r.status().code() == StatusCode::kOutOfRange)
            << r.status();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Names and mappings.

TEST(CodecTest, ReasonForMapsStatusCodes) {
  EXPECT_EQ(ReasonFor(Status::OutOfRange("x")), RejectReason::kTooLarge);
  EXPECT_EQ(ReasonFor(Status::FailedPrecondition("x")), RejectReason::kVersionMismatch);
  EXPECT_EQ(ReasonFor(Status::InvalidArgument("unknown message type 9")),
            RejectReason::kUnknownType);
  EXPECT_EQ(ReasonFor(Status::InvalidArgument("bad magic")), RejectReason::kMalformed);
}

TEST(MessagesTest, RejectReasonNamesAreStableAndUnique) {
  EXPECT_STREQ(RejectReasonName(RejectReason::kMalformed), "malformed");
  EXPECT_STREQ(RejectReasonName(RejectReason::kUnknownType), "unknown_type");
  EXPECT_STREQ(RejectReasonName(RejectReason::kVersionMismatch), "version_mismatch");
  EXPECT_STREQ(RejectReasonName(RejectReason::kSpecMismatch), "spec_mismatch");
  EXPECT_STREQ(RejectReasonName(RejectReason::kUnknownLink), "unknown_link");
  EXPECT_STREQ(RejectReasonName(RejectReason::kNotAuthorized), "not_authorized");
  EXPECT_STREQ(RejectReasonName(RejectReason::kWrongShape), "wrong_shape");
  EXPECT_STREQ(RejectReasonName(RejectReason::kNonFinite), "non_finite");
  EXPECT_STREQ(RejectReasonName(RejectReason::kRoundNotOpen), "round_not_open");
  EXPECT_STREQ(RejectReasonName(RejectReason::kDuplicate), "duplicate");
  EXPECT_STREQ(RejectReasonName(RejectReason::kTooLarge), "too_large");
  EXPECT_STREQ(RejectReasonName(RejectReason::kNormTooLarge), "norm_too_large");
  EXPECT_STREQ(RejectReasonName(RejectReason::kInternal), "internal");
  EXPECT_STREQ(RejectReasonName(RejectReason::kNotHello), "not_hello");
  EXPECT_STREQ(RejectReasonName(static_cast<RejectReason>(999)), "unknown");
  std::set<std::string> names;
  EXPECT_STREQ(RejectReasonName(RejectReason::kSecAgg), "secagg");
  for (int i = 1; i <= 15; ++i) names.insert(RejectReasonName(static_cast<RejectReason>(i)));
  EXPECT_EQ(names.size(), 15u);
}

TEST(MessagesTest, TypeOfAndNames) {
  EXPECT_EQ(TypeOf(Message(Hello{})), MessageType::kHello);
  EXPECT_EQ(TypeOf(Message(Welcome{})), MessageType::kWelcome);
  EXPECT_EQ(TypeOf(Message(GlobalLink{})), MessageType::kGlobalLink);
  EXPECT_EQ(TypeOf(Message(Update{})), MessageType::kUpdate);
  EXPECT_EQ(TypeOf(Message(Ack{})), MessageType::kAck);
  EXPECT_EQ(TypeOf(Message(Reject{})), MessageType::kReject);
  EXPECT_EQ(TypeOf(Message(Error{})), MessageType::kError);
  EXPECT_EQ(TypeOf(Message(SecAgg{})), MessageType::kSecAgg);
  EXPECT_STREQ(MessageTypeName(MessageType::kSecAgg), "SecAgg");
  EXPECT_STREQ(MessageTypeName(MessageType::kGlobalLink), "GlobalLink");
  EXPECT_STREQ(MessageTypeName(MessageType::kUpdate), "Update");
  EXPECT_STREQ(MessageTypeName(static_cast<MessageType>(77)), "unknown");
}

}  // namespace
}  // namespace mlink::protocol
