// Test support for tests that run an aggregator in process: link specs, CloudOptions with the
// certificates from scripts/gen-certs, and plain HTTP on loopback.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "mlink/cloud/options.h"
#include "mlink/link/link.h"

namespace mlink::testing {

// A vec2vec spec: `source` -> `target` values.
inline link::LinkSpec VectorSpec(int source, int target,
                                 link::TaskKind task = link::TaskKind::kSingleLabel) {
  link::LinkSpec s;
  s.source = link::OutputFormat::Vector(source);
  s.target = link::OutputFormat::Vector(target);
  s.task = task;
  return s;
}

// The small link of the cloud tests: vec2vec 3 -> 2, single label, 50 parameters.
inline link::LinkSpec SmallSpec() { return VectorSpec(3, 2); }

// An aggregator on any free ports with the cloud certificate of `certs`, keeping its state in
// `data_dir`; no links.
inline cloud::CloudOptions CloudOptionsFor(const std::string& certs, const std::string& data_dir) {
  cloud::CloudOptions o;
  o.port = 0;
  o.http_port = 0;
  o.ca_file = certs + "/ca.pem";
  o.cert_file = certs + "/cloud.pem";
  o.key_file = certs + "/cloud.key";
  o.data_dir = data_dir;
  return o;
}

// A mean link whose rounds close at `min_edges` updates, or at the deadline with `quorum`.
inline cloud::LinkOptions LinkFor(const std::string& id, const link::LinkSpec& spec,
                                  uint64_t init_seed, int min_edges, int quorum,
                                  double round_deadline_s) {
  cloud::LinkOptions l;
  l.id = id;
  l.spec = spec;
  l.init_seed = init_seed;
  l.min_edges = min_edges;
  l.quorum = quorum;
  l.round_deadline_s = round_deadline_s;
  return l;
}

// GET `path` from 127.0.0.1:`port` over plain HTTP; the whole response, or "" if no connection.
inline std::string HttpGet(uint16_t port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
  close(fd);
  return out;
}

// The value of the unlabelled series `name` in a /metrics text; -1 if absent.
inline long Metric(const std::string& text, const std::string& name) {
  auto at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::atol(text.c_str() + at + name.size() + 2);
}

// A loopback TCP port that was free a moment ago.
inline uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace mlink::testing
