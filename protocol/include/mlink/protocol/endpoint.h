// The federation endpoint: wss://HOST:PORT/v1/federation, and the protocol version rule.
#pragma once

#include <cstdint>
#include <string>

#include "mlink/common/status.h"

namespace mlink::protocol {

// Bumped on any incompatible change to the wire format; peers with different versions refuse
// each other at Hello with a clear reason.
inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr char kFederationPath[] = "/v1/federation";

struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string path;
  std::string ToString() const;
};

// Parses "wss://host:port/path" (port defaults to 443, path to /v1/federation). Plain ws:// is
// refused: federation always runs over mutual TLS.
Result<Endpoint> ParseFederationUrl(const std::string& url);

}  // namespace mlink::protocol
