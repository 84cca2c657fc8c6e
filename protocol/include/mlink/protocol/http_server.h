// A small plain-HTTP server for operator endpoints (the aggregator's /healthz, /metrics and
// status page; an edge's /healthz and label intake). One I/O thread; one request per connection;
// request bodies are capped (413 above the cap). Handlers run on the HTTP thread and must be
// quick (hand heavy work to a worker).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "mlink/common/status.h"

namespace mlink::protocol {

struct HttpRequest {
  std::string method;   // "GET", "POST", ...
  std::string target;   // path and query, e.g. "/labels?format=csv"
  std::string content_type;
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  // Binds host:port (0 = any free port) and serves on its own thread; errors name the address.
  static Result<std::unique_ptr<HttpServer>> Start(const std::string& host, uint16_t port, Handler handler,
                                                   std::size_t max_body_bytes = 8u << 20);
  ~HttpServer();
  void Stop();
  uint16_t port() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlink::protocol
