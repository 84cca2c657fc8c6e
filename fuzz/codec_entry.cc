#include <algorithm>
#include <exception>
#include <string>
#include <vector>

#include "entries.h"
#include "mlink/protocol/codec.h"

namespace mlink::fuzz {
namespace {

Status CheckCodec(const uint8_t* data, std::size_t size) {
  Result<protocol::Message> decoded = protocol::Decode(data, size);
  if (!decoded.ok()) {
    if (decoded.status().code() == StatusCode::kOk) return Status::Internal("Decode failed with an OK status");
    if (protocol::ReasonFor(decoded.status()) == protocol::RejectReason::kInternal) {
      return Status::Internal("decode error maps to kInternal: " + decoded.status().ToString());
    }
    return Status::Ok();
  }
  const std::vector<uint8_t> again = protocol::Encode(*decoded);
  if (again.size() != size || !std::equal(again.begin(), again.end(), data)) {
    return Status::Internal("a decoded " + std::string(protocol::MessageTypeName(protocol::TypeOf(*decoded))) +
                            " of " + std::to_string(size) + " bytes re-encodes to " +
                            std::to_string(again.size()) + " different bytes");
  }
  Result<std::size_t> announced = protocol::AnnouncedFrameSize(data, size);
  if (!announced.ok() || *announced != size) {
    return Status::Internal("AnnouncedFrameSize disagrees with Decode on a valid frame of " +
                            std::to_string(size) + " bytes");
  }
  return Status::Ok();
}

}  // namespace

Status CheckCodecInput(const uint8_t* data, std::size_t size) {
  try {  // Decode promises a Status: no exception may leave it.
    return CheckCodec(data, size);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("codec: exception escaped: ") + e.what());
  } catch (...) {
    return Status::Internal("codec: unknown exception escaped");
  }
}

}  // namespace mlink::fuzz
