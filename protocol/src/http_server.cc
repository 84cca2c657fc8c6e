#include "mlink/protocol/http_server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <thread>

namespace mlink::protocol {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

struct HttpServer::Impl {
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  Handler handler;
  std::size_t max_body = 0;
  std::thread thread;

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted) return;
      if (!ec) Serve(std::make_shared<beast::tcp_stream>(std::move(socket)));
      Accept();
    });
  }

  void Reply(const std::shared_ptr<beast::tcp_stream>& stream, unsigned version, HttpResponse r) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(version);
    res->keep_alive(false);
    res->result(static_cast<http::status>(r.status));
    res->set(http::field::content_type, r.content_type);
    res->body() = std::move(r.body);
    res->prepare_payload();
    http::async_write(*stream, *res, [stream, res](beast::error_code, std::size_t) {
      beast::error_code ignored;
      stream->socket().shutdown(tcp::socket::shutdown_send, ignored);
    });
  }

  void Serve(std::shared_ptr<beast::tcp_stream> stream) {
    auto buffer = std::make_shared<beast::flat_buffer>();
    auto parser = std::make_shared<http::request_parser<http::string_body>>();
    parser->body_limit(max_body);
    stream->expires_after(std::chrono::seconds(30));
    http::async_read(*stream, *buffer, *parser, [this, stream, buffer, parser](beast::error_code ec, std::size_t) {
      if (ec == http::error::body_limit) {
        Reply(stream, 11, {413, "text/plain; charset=utf-8",
                           "request body over the limit of " + std::to_string(max_body) + " bytes\n"});
        return;
      }
      if (ec) return;
      const auto& req = parser->get();
      HttpRequest r;
      r.method = std::string(req.method_string());
      r.target = std::string(req.target());
      r.content_type = std::string(req[http::field::content_type]);
      r.body = req.body();
      HttpResponse out;
      try {
        out = handler(r);
      } catch (const std::exception& e) {
        out = {500, "text/plain; charset=utf-8", std::string("internal error: ") + e.what() + "\n"};
      }
      Reply(stream, req.version(), std::move(out));
    });
  }
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& host, uint16_t port, Handler handler,
                                                      std::size_t max_body_bytes) {
  auto impl = std::make_unique<Impl>();
  impl->handler = std::move(handler);
  impl->max_body = max_body_bytes;
  beast::error_code ec;
  auto addr = net::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("HTTP listen address '" + host + "': " + ec.message());
  tcp::endpoint ep(addr, port);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return Status::Unavailable("cannot listen for HTTP on " + host + ":" + std::to_string(port) + ": " + ec.message());
  impl->Accept();
  impl->thread = std::thread([p = impl.get()] { p->ioc.run(); });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

void HttpServer::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->ioc.stop();
  impl_->thread.join();
}

uint16_t HttpServer::port() const {
  beast::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

}  // namespace mlink::protocol
