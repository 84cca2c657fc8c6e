// Internal: a small plain-HTTP server for the aggregator's /healthz and /metrics (GET only).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "mlink/common/status.h"

namespace mlink::cloud {

class HttpServer {
 public:
  // Returns the HTTP status; fills content type and body. Runs on the HTTP thread.
  using Route = std::function<int(const std::string& target, std::string* content_type, std::string* body)>;
  static Result<std::unique_ptr<HttpServer>> Start(const std::string& host, uint16_t port, Route route);
  ~HttpServer();
  void Stop();
  uint16_t port() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlink::cloud
