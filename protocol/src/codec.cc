// Federation frame codec. Wire layout (see protocol/README.md):
//   header (12 bytes, little-endian): "MLNK" | u16 version | u16 type | u32 body length
//   body: cereal PortableBinary, always written little-endian (first body byte 0x01), then the
//         message's fields in declaration order. Strings and lists carry a u64 size tag; float
//         vectors carry a u64 element count followed by the raw IEEE-754 floats.
//
// Decoding never trusts a size before checking it: every size tag is compared with its Limit and
// with the bytes left in the body before anything is allocated, so a hostile frame costs at most
// the frame itself. cereal's stock std::string / std::vector loaders resize first and are
// therefore not used.
#include "mlink/protocol/codec.h"

#include <cassert>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>
#include <cstdio>
#include <cstring>
#include <exception>
#include <istream>
#include <iterator>
#include <limits>
#include <ostream>
#include <streambuf>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "mlink/common/flat_params.h"
#include "mlink/protocol/endpoint.h"

namespace mlink::protocol {
namespace {

constexpr char kMagic[4] = {'M', 'L', 'N', 'K'};
constexpr uint8_t kLittleEndianMarker = 1;  // cereal's portable-binary endianness byte
constexpr std::size_t kSizeTagBytes = sizeof(cereal::size_type);
// Smallest possible encoding of one list entry, used to refuse counts the body cannot hold.
constexpr std::size_t kMinStringBytes = kSizeTagBytes;  // empty string
constexpr std::size_t kMinSubscriptionBytes = kSizeTagBytes + sizeof(uint64_t);

static_assert(std::numeric_limits<float>::is_iec559, "the wire carries IEEE-754 floats");
static_assert(sizeof(cereal::size_type) == 8, "the wire's size tags are u64");

// ---------------------------------------------------------------------------------------------
// Streams over caller memory (no copies).

// Appends everything written to a byte vector.
class VectorSink : public std::streambuf {
 public:
  explicit VectorSink(std::vector<uint8_t>* out) : out_(out) {}

 protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    out_->insert(out_->end(), reinterpret_cast<const uint8_t*>(s),
                 reinterpret_cast<const uint8_t*>(s) + n);
    return n;
  }
  int_type overflow(int_type ch) override {
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      out_->push_back(static_cast<uint8_t>(traits_type::to_char_type(ch)));
    }
    return traits_type::not_eof(ch);
  }

 private:
  std::vector<uint8_t>* out_;
};

// Reads from a fixed byte range; knows how many bytes are left.
class ByteSource : public std::streambuf {
 public:
  ByteSource(const uint8_t* data, std::size_t size) {
    char* begin = const_cast<char*>(reinterpret_cast<const char*>(data));  // never written
    setg(begin, begin, begin + size);
  }
  std::size_t remaining() const { return static_cast<std::size_t>(egptr() - gptr()); }
};

// ---------------------------------------------------------------------------------------------
// Little-endian header helpers.

void PutLe(std::vector<uint8_t>* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

uint64_t GetLe(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

std::string Hex64(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof(buf), "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Encoding.

using OutArchive = cereal::PortableBinaryOutputArchive;
using InArchive = cereal::PortableBinaryInputArchive;

void SaveString(OutArchive& ar, const std::string& s) {
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(s.size())));
  if (!s.empty()) ar(cereal::binary_data(s.data(), s.size()));
}

void SaveStrings(OutArchive& ar, const std::vector<std::string>& list) {
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(list.size())));
  for (const std::string& s : list) SaveString(ar, s);
}

void SaveFloats(OutArchive& ar, const std::vector<float>& v) {
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(v.size())));
  if (!v.empty()) ar(cereal::binary_data(v.data(), v.size() * sizeof(float)));
}

void SaveReason(OutArchive& ar, RejectReason r) { ar(static_cast<uint16_t>(r)); }

void SaveBody(OutArchive& ar, const Hello& m) {
  ar(m.protocol_version);
  SaveString(ar, m.edge_id);
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(m.links.size())));
  for (const Subscription& s : m.links) {
    SaveString(ar, s.link_id);
    ar(s.spec_hash);
  }
}

void SaveBody(OutArchive& ar, const Welcome& m) {
  ar(m.protocol_version);
  SaveString(ar, m.edge_id);
  SaveStrings(ar, m.accepted);
  SaveStrings(ar, m.refused);
  SaveStrings(ar, m.refused_reasons);
}

void SaveBody(OutArchive& ar, const GlobalLink& m) {
  SaveString(ar, m.link_id);
  ar(m.spec_hash, m.round);
  SaveFloats(ar, m.params);
  ar(m.checksum);
}

void SaveBody(OutArchive& ar, const Update& m) {
  SaveString(ar, m.link_id);
  ar(m.base_round);
  SaveFloats(ar, m.delta);
  ar(m.samples, m.loss, m.metric, m.checksum);
}

void SaveBody(OutArchive& ar, const Ack& m) {
  SaveString(ar, m.link_id);
  ar(m.round, m.received);
}

void SaveBody(OutArchive& ar, const Reject& m) {
  SaveString(ar, m.link_id);
  ar(m.round);
  SaveReason(ar, m.reason);
  SaveString(ar, m.text);
}

void SaveBody(OutArchive& ar, const Error& m) {
  SaveReason(ar, m.reason);
  SaveString(ar, m.text);
}

void SaveBody(OutArchive& ar, const SecAgg& m) {
  SaveString(ar, m.link_id);
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(m.payload.size())));
  if (!m.payload.empty()) ar(cereal::binary_data(m.payload.data(), m.payload.size()));
}

std::size_t BodySizeHint(const Message& message) {
  if (const auto* g = std::get_if<GlobalLink>(&message)) return 128 + g->params.size() * 4;
  if (const auto* u = std::get_if<Update>(&message)) return 128 + u->delta.size() * 4;
  if (const auto* s = std::get_if<SecAgg>(&message)) return 128 + s->payload.size();
  return 256;
}

// ---------------------------------------------------------------------------------------------
// Decoding. Every Read* checks its size tag against a Limit and the bytes left before resizing.
// cereal throws on a short read; Decode catches that.

class BodyReader {
 public:
  BodyReader(const ByteSource* source, InArchive* ar, const Limits& limits)
      : source_(source), ar_(ar), limits_(limits) {}

  const Limits& limits() const { return limits_; }
  std::size_t remaining() const { return source_->remaining(); }

  template <typename T>
  void Read(T* value) {
    static_assert(std::is_arithmetic_v<T>, "Read is for fixed-width scalars");
    (*ar_)(*value);
  }

  void ReadReason(RejectReason* reason) {
    uint16_t raw = 0;
    Read(&raw);
    *reason = static_cast<RejectReason>(raw);  // unknown codes pass through (named "unknown")
  }

  Status ReadString(const std::string& field, std::size_t limit, std::string* out) {
    const cereal::size_type n = ReadSizeTag();
    if (n > limit) {
      return Status::OutOfRange(field + " has " + std::to_string(n) + " bytes, limit " +
                                std::to_string(limit));
    }
    if (n > remaining()) return Truncated(field, std::to_string(n) + " bytes");
    out->resize(static_cast<std::size_t>(n));
    if (n > 0) (*ar_)(cereal::binary_data(out->data(), out->size()));
    return Status::Ok();
  }

  Status ReadFloats(const std::string& field, std::vector<float>* out) {
    const cereal::size_type n = ReadSizeTag();
    if (n > limits_.max_tensor_len) {
      return Status::OutOfRange(field + " has " + std::to_string(n) + " values, limit " +
                                std::to_string(limits_.max_tensor_len));
    }
    if (n > remaining() / sizeof(float)) return Truncated(field, std::to_string(n) + " floats");
    out->resize(static_cast<std::size_t>(n));
    if (n > 0) (*ar_)(cereal::binary_data(out->data(), out->size() * sizeof(float)));
    return Status::Ok();
  }

  // A list's entry count; each entry needs at least `min_entry_bytes` of the body.
  Status ReadCount(const std::string& field, std::size_t min_entry_bytes, std::size_t* count) {
    const cereal::size_type n = ReadSizeTag();
    if (n > limits_.max_list_count) {
      return Status::OutOfRange(field + " has " + std::to_string(n) + " entries, limit " +
                                std::to_string(limits_.max_list_count));
    }
    if (n > remaining() / min_entry_bytes) return Truncated(field, std::to_string(n) + " entries");
    *count = static_cast<std::size_t>(n);
    return Status::Ok();
  }

  // Opaque bytes: at most `limit` and at most what the body has left.
  Status ReadBytes(const std::string& field, std::size_t limit, std::vector<uint8_t>* out) {
    const cereal::size_type n = ReadSizeTag();
    if (n > limit) {
      return Status::OutOfRange(field + " has " + std::to_string(n) + " bytes, limit " + std::to_string(limit));
    }
    if (n > remaining()) return Truncated(field, std::to_string(n) + " bytes");
    out->resize(static_cast<std::size_t>(n));
    if (n > 0) (*ar_)(cereal::binary_data(out->data(), out->size()));
    return Status::Ok();
  }

  Status ReadStrings(const std::string& field, std::size_t limit, std::vector<std::string>* out) {
    std::size_t n = 0;
    MLINK_RETURN_IF_ERROR(ReadCount(field, kMinStringBytes, &n));
    out->resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      MLINK_RETURN_IF_ERROR(ReadString(field + "[" + std::to_string(i) + "]", limit, &(*out)[i]));
    }
    return Status::Ok();
  }

 private:
  cereal::size_type ReadSizeTag() {
    cereal::size_type n = 0;
    (*ar_)(cereal::make_size_tag(n));
    return n;
  }

  Status Truncated(const std::string& field, const std::string& claimed) const {
    return Status::InvalidArgument("truncated body: " + field + " claims " + claimed +
                                   " but only " + std::to_string(remaining()) + " bytes are left");
  }

  const ByteSource* source_;
  InArchive* ar_;
  const Limits& limits_;
};

Status LoadBody(BodyReader& r, Hello* m) {
  r.Read(&m->protocol_version);
  MLINK_RETURN_IF_ERROR(r.ReadString("Hello.edge_id", r.limits().max_string_len, &m->edge_id));
  std::size_t n = 0;
  MLINK_RETURN_IF_ERROR(r.ReadCount("Hello.links", kMinSubscriptionBytes, &n));
  m->links.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    MLINK_RETURN_IF_ERROR(r.ReadString("Hello.links[" + std::to_string(i) + "].link_id",
                                       r.limits().max_string_len, &m->links[i].link_id));
    r.Read(&m->links[i].spec_hash);
  }
  return Status::Ok();
}

Status LoadBody(BodyReader& r, Welcome* m) {
  const Limits& l = r.limits();
  r.Read(&m->protocol_version);
  MLINK_RETURN_IF_ERROR(r.ReadString("Welcome.edge_id", l.max_string_len, &m->edge_id));
  MLINK_RETURN_IF_ERROR(r.ReadStrings("Welcome.accepted", l.max_string_len, &m->accepted));
  MLINK_RETURN_IF_ERROR(r.ReadStrings("Welcome.refused", l.max_string_len, &m->refused));
  // Reasons are human-readable text, like Reject.text.
  MLINK_RETURN_IF_ERROR(
      r.ReadStrings("Welcome.refused_reasons", l.max_text_len, &m->refused_reasons));
  if (m->refused_reasons.size() != m->refused.size()) {
    return Status::InvalidArgument("Welcome.refused has " + std::to_string(m->refused.size()) +
                                   " entries but Welcome.refused_reasons has " +
                                   std::to_string(m->refused_reasons.size()) +
                                   "; they must pair up");
  }
  return Status::Ok();
}

Status LoadBody(BodyReader& r, GlobalLink* m) {
  MLINK_RETURN_IF_ERROR(r.ReadString("GlobalLink.link_id", r.limits().max_string_len, &m->link_id));
  r.Read(&m->spec_hash);
  r.Read(&m->round);
  MLINK_RETURN_IF_ERROR(r.ReadFloats("GlobalLink.params", &m->params));
  r.Read(&m->checksum);
  return Status::Ok();
}

Status LoadBody(BodyReader& r, Update* m) {
  MLINK_RETURN_IF_ERROR(r.ReadString("Update.link_id", r.limits().max_string_len, &m->link_id));
  r.Read(&m->base_round);
  MLINK_RETURN_IF_ERROR(r.ReadFloats("Update.delta", &m->delta));
  r.Read(&m->samples);
  r.Read(&m->loss);
  r.Read(&m->metric);
  r.Read(&m->checksum);
  return Status::Ok();
}

Status LoadBody(BodyReader& r, Ack* m) {
  MLINK_RETURN_IF_ERROR(r.ReadString("Ack.link_id", r.limits().max_string_len, &m->link_id));
  r.Read(&m->round);
  r.Read(&m->received);
  return Status::Ok();
}

Status LoadBody(BodyReader& r, Reject* m) {
  MLINK_RETURN_IF_ERROR(r.ReadString("Reject.link_id", r.limits().max_string_len, &m->link_id));
  r.Read(&m->round);
  r.ReadReason(&m->reason);
  return r.ReadString("Reject.text", r.limits().max_text_len, &m->text);
}

Status LoadBody(BodyReader& r, Error* m) {
  r.ReadReason(&m->reason);
  return r.ReadString("Error.text", r.limits().max_text_len, &m->text);
}

Status LoadBody(BodyReader& r, SecAgg* m) {
  MLINK_RETURN_IF_ERROR(r.ReadString("SecAgg.link_id", r.limits().max_string_len, &m->link_id));
  // A masked input is one 32-bit word per parameter, plus its small fixed fields.
  return r.ReadBytes("SecAgg.payload", r.limits().max_tensor_len * 4 + 4096, &m->payload);
}

template <typename T>
Result<Message> LoadAs(BodyReader& r) {
  T m;
  MLINK_RETURN_IF_ERROR(LoadBody(r, &m));
  return Message(std::move(m));
}

Result<Message> LoadMessage(MessageType type, BodyReader& r) {
  switch (type) {
    case MessageType::kHello:
      return LoadAs<Hello>(r);
    case MessageType::kWelcome:
      return LoadAs<Welcome>(r);
    case MessageType::kGlobalLink:
      return LoadAs<GlobalLink>(r);
    case MessageType::kUpdate:
      return LoadAs<Update>(r);
    case MessageType::kAck:
      return LoadAs<Ack>(r);
    case MessageType::kReject:
      return LoadAs<Reject>(r);
    case MessageType::kError:
      return LoadAs<Error>(r);
    case MessageType::kSecAgg:
      return LoadAs<SecAgg>(r);
  }
  return Status::Internal("LoadMessage: unhandled message type");  // Decode checked the type
}

bool IsKnownType(uint64_t raw) {
  return raw >= static_cast<uint64_t>(MessageType::kHello) &&
         raw <= static_cast<uint64_t>(MessageType::kSecAgg);
}

Status VerifyChecksum(const char* what, const std::vector<float>& values, uint64_t carried) {
  const uint64_t actual = ParamsChecksum(values);
  if (actual == carried) return Status::Ok();
  return Status::InvalidArgument(std::string(what) + " checksum mismatch: the frame carries " +
                                 Hex64(carried) + " but the values hash to " + Hex64(actual));
}

// Magic, version and type of a header (kHeaderBytes at `data`).
Result<MessageType> CheckHeader(const uint8_t* data) {
  if (std::memcmp(data, kMagic, sizeof(kMagic)) != 0) {
    return Status::InvalidArgument("bad magic: the frame does not start with \"MLNK\"");
  }
  const uint64_t version = GetLe(data + 4, 2);
  if (version != kProtocolVersion) {
    return Status::FailedPrecondition("protocol version mismatch: the frame has version " +
                                      std::to_string(version) + ", this peer speaks version " +
                                      std::to_string(kProtocolVersion));
  }
  const uint64_t raw_type = GetLe(data + 6, 2);
  if (!IsKnownType(raw_type)) {
    return Status::InvalidArgument("unknown message type " + std::to_string(raw_type));
  }
  return static_cast<MessageType>(raw_type);
}

}  // namespace

std::vector<uint8_t> Encode(const Message& message) {
  const MessageType type = TypeOf(message);
  std::vector<uint8_t> out;
  out.reserve(kHeaderBytes + BodySizeHint(message));
  out.insert(out.end(), std::begin(kMagic), std::end(kMagic));
  PutLe(&out, kProtocolVersion, 2);
  PutLe(&out, static_cast<uint16_t>(type), 2);
  PutLe(&out, 0, 4);  // body length, patched below
  {
    VectorSink sink(&out);
    std::ostream os(&sink);
    OutArchive ar(os, OutArchive::Options::LittleEndian());
    std::visit([&ar](const auto& m) { SaveBody(ar, m); }, message);
  }
  const std::size_t body = out.size() - kHeaderBytes;
  // Bodies are bounded by Limits::max_message_bytes, far below 4 GiB.
  assert(body <= std::numeric_limits<uint32_t>::max());
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<uint8_t>(body >> (8 * i));
  return out;
}

Result<std::size_t> AnnouncedFrameSize(const uint8_t* data, std::size_t size, const Limits& limits) {
  if (size < kHeaderBytes || data == nullptr) {
    return Status::InvalidArgument("truncated frame: " + std::to_string(size) +
                                   " bytes, the header alone needs " + std::to_string(kHeaderBytes));
  }
  MLINK_ASSIGN_OR_RETURN(const MessageType type, CheckHeader(data));
  const std::size_t frame = kHeaderBytes + static_cast<std::size_t>(GetLe(data + 8, 4));
  if (frame > limits.max_message_bytes) {
    return Status::OutOfRange(std::string(MessageTypeName(type)) + " frame announces " + std::to_string(frame) +
                              " bytes, limit " + std::to_string(limits.max_message_bytes));
  }
  return frame;
}

Result<Message> Decode(const uint8_t* data, std::size_t size, const Limits& limits) {
  if (size > limits.max_message_bytes) {
    return Status::OutOfRange("frame has " + std::to_string(size) + " bytes, limit " +
                              std::to_string(limits.max_message_bytes));
  }
  if (size < kHeaderBytes || data == nullptr) {
    return Status::InvalidArgument("truncated frame: " + std::to_string(size) +
                                   " bytes, the header alone needs " +
                                   std::to_string(kHeaderBytes));
  }
  MLINK_ASSIGN_OR_RETURN(const MessageType type, CheckHeader(data));
  const std::string type_name = MessageTypeName(type);
  const uint64_t body_len = GetLe(data + 8, 4);
  const std::size_t carried = size - kHeaderBytes;
  if (body_len != carried) {
    return Status::InvalidArgument("the header says the " + type_name + " body has " +
                                   std::to_string(body_len) + " bytes but the frame carries " +
                                   std::to_string(carried) +
                                   (body_len > carried ? " (truncated)" : " (trailing bytes)"));
  }
  const uint8_t* body = data + kHeaderBytes;
  if (carried == 0 || body[0] != kLittleEndianMarker) {
    return Status::InvalidArgument("truncated or malformed " + type_name +
                                   " body: missing the little-endian marker byte 0x01");
  }

  ByteSource source(body, carried);
  Result<Message> decoded = Status::Internal("Decode: nothing decoded");
  try {
    std::istream is(&source);
    InArchive ar(is);  // reads the marker byte; converts to host order if needed
    BodyReader reader(&source, &ar, limits);
    decoded = LoadMessage(type, reader);
  } catch (const std::exception& e) {
    return Status::InvalidArgument("truncated or malformed " + type_name + " body: " + e.what());
  } catch (...) {
    return Status::InvalidArgument("truncated or malformed " + type_name + " body");
  }
  if (!decoded.ok()) return decoded.status();
  if (source.remaining() != 0) {
    return Status::InvalidArgument(type_name + " body has " + std::to_string(source.remaining()) +
                                   " trailing bytes after its last field");
  }
  if (const auto* g = std::get_if<GlobalLink>(&*decoded)) {
    MLINK_RETURN_IF_ERROR(VerifyChecksum("GlobalLink.params", g->params, g->checksum));
  } else if (const auto* u = std::get_if<Update>(&*decoded)) {
    MLINK_RETURN_IF_ERROR(VerifyChecksum("Update.delta", u->delta, u->checksum));
  }
  return decoded;
}

RejectReason ReasonFor(const Status& decode_error) {
  switch (decode_error.code()) {
    case StatusCode::kOk:
      return RejectReason::kInternal;  // not an error: the caller's bug
    case StatusCode::kOutOfRange:
      return RejectReason::kTooLarge;
    case StatusCode::kFailedPrecondition:
      return RejectReason::kVersionMismatch;
    default:
      break;
  }
  if (decode_error.message().find("unknown message type") != std::string::npos) {
    return RejectReason::kUnknownType;
  }
  return RejectReason::kMalformed;
}

uint64_t ParamsChecksum(const std::vector<float>& values) {
  return Fnv1a64(values.data(), values.size() * sizeof(float));
}

}  // namespace mlink::protocol
