#include "mlink/protocol/endpoint.h"

namespace mlink::protocol {

std::string Endpoint::ToString() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return "wss://" + h + ":" + std::to_string(port) + path;
}

Result<Endpoint> ParseFederationUrl(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("federation URL '" + url + "': " + why + "; expected wss://HOST:PORT" +
                                   kFederationPath);
  };
  const std::string scheme = "wss://";
  if (url.rfind("ws://", 0) == 0) return bad("plain ws:// is not allowed, federation runs over TLS");
  if (url.rfind(scheme, 0) != 0) return bad("missing wss:// scheme");
  std::string rest = url.substr(scheme.size());
  Endpoint ep;
  std::size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  ep.path = slash == std::string::npos ? kFederationPath : rest.substr(slash);
  std::string port_text;
  if (!authority.empty() && authority[0] == '[') {
    std::size_t close = authority.find(']');
    if (close == std::string::npos) return bad("unclosed '[' in IPv6 host");
    ep.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return bad("junk after IPv6 host");
      port_text = authority.substr(close + 2);
    }
  } else {
    std::size_t colon = authority.rfind(':');
    ep.host = authority.substr(0, colon);
    if (colon != std::string::npos) port_text = authority.substr(colon + 1);
  }
  if (ep.host.empty()) return bad("empty host");
  if (port_text.empty()) {
    ep.port = 443;
  } else {
    if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5) return bad("port is not a number");
    int p = std::stoi(port_text);
    if (p < 1 || p > 65535) return bad("port out of range 1-65535");
    ep.port = static_cast<uint16_t>(p);
  }
  return ep;
}

}  // namespace mlink::protocol
