// The only translation unit that includes Boost.Beast/Asio/OpenSSL for the federation wire.
#include "mlink/protocol/transport.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <atomic>
#include <cassert>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "mlink/common/log.h"

namespace mlink::protocol {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
using tcp = boost::asio::ip::tcp;
using WsStream = websocket::stream<beast::ssl_stream<beast::tcp_stream>>;

Frame MakeFrame(const Message& m) { return std::make_shared<const std::vector<uint8_t>>(Encode(m)); }

namespace {

std::chrono::steady_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

Status LoadTls(ssl::context& ctx, const TlsFiles& files, bool server) {
  for (const auto& [what, path] : {std::pair<const char*, const std::string&>{"CA certificate", files.ca_file},
                                   {"certificate", files.cert_file},
                                   {"private key", files.key_file}}) {
    if (path.empty()) return Status::InvalidArgument(std::string("TLS: no ") + what + " file configured");
    if (!std::filesystem::exists(path)) return Status::NotFound(std::string("TLS ") + what + " file " + path + ": no such file");
  }
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  beast::error_code ec;
  ctx.use_certificate_chain_file(files.cert_file, ec);
  if (ec) return Status::InvalidArgument("TLS certificate file " + files.cert_file + ": " + ec.message());
  ctx.use_private_key_file(files.key_file, ssl::context::pem, ec);
  if (ec) return Status::InvalidArgument("TLS private key file " + files.key_file + ": " + ec.message());
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
    return Status::InvalidArgument("TLS private key " + files.key_file + " does not match certificate " + files.cert_file);
  }
  ctx.load_verify_file(files.ca_file, ec);
  if (ec) return Status::InvalidArgument("TLS CA file " + files.ca_file + ": " + ec.message());
  ctx.set_verify_mode(server ? (ssl::verify_peer | ssl::verify_fail_if_no_peer_cert) : ssl::verify_peer);
  return Status::Ok();
}

std::string PeerCommonName(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return "";
  char buf[256] = {0};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof(buf));
  X509_free(cert);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

// ============================================================================== read budget

class ReadBudget {
 public:
  explicit ReadBudget(std::size_t limit) : limit_(std::max<std::size_t>(limit, 1)) {}

  // Charges `bytes` and returns true when they fit beside what is held (anything fits when
  // nothing is held, so one message larger than the budget still passes, alone) and no earlier
  // request waits. Otherwise queues the request and returns false; `on_grant` runs once the bytes
  // have been charged for it, under this budget's lock, so it must do no more than post.
  bool Acquire(std::size_t bytes, std::function<void()> on_grant) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || (waiting_.empty() && Fits(bytes))) {
      held_ += bytes;
      return true;
    }
    waiting_.push_back({bytes, std::move(on_grant)});
    ++pauses_;
    return false;
  }

  void Release(std::size_t bytes) {
    std::vector<std::function<void()>> granted;  // destroyed after the lock is released
    std::lock_guard<std::mutex> lock(mu_);
    held_ -= bytes;
    while (!closed_ && !waiting_.empty() && Fits(waiting_.front().bytes)) {
      held_ += waiting_.front().bytes;
      waiting_.front().on_grant();
      granted.push_back(std::move(waiting_.front().on_grant));
      waiting_.pop_front();
    }
  }

  // Server shutdown: drops the waiting requests; from now on every request is granted at once.
  void Close() {
    std::deque<Waiter> dropped;  // destroyed after the lock is released
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    dropped.swap(waiting_);
  }

  static ReadLease Lease(std::shared_ptr<ReadBudget> budget, std::size_t bytes) {
    return ReadLease(std::move(budget), bytes);
  }

  std::size_t held() const {
    std::lock_guard<std::mutex> lock(mu_);
    return held_;
  }
  std::size_t waiting() const {
    std::lock_guard<std::mutex> lock(mu_);
    return waiting_.size();
  }
  uint64_t pauses() const {
    std::lock_guard<std::mutex> lock(mu_);
    return pauses_;
  }

 private:
  struct Waiter {
    std::size_t bytes;
    std::function<void()> on_grant;
  };
  bool Fits(std::size_t bytes) const { return held_ == 0 || held_ + bytes <= limit_; }

  const std::size_t limit_;
  mutable std::mutex mu_;
  std::size_t held_ = 0;         // GUARDED_BY(mu_)
  std::deque<Waiter> waiting_;   // GUARDED_BY(mu_), in arrival order
  uint64_t pauses_ = 0;          // GUARDED_BY(mu_)
  bool closed_ = false;          // GUARDED_BY(mu_)
};

ReadLease::ReadLease(ReadLease&& other) noexcept
    : budget_(std::move(other.budget_)), bytes_(std::exchange(other.bytes_, 0)) {}

ReadLease& ReadLease::operator=(ReadLease&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = std::move(other.budget_);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

ReadLease::~ReadLease() { Release(); }

void ReadLease::Release() {
  if (budget_ && bytes_ > 0) budget_->Release(bytes_);
  budget_.reset();
  bytes_ = 0;
}

// =================================================================================== server

struct Server::Impl {
  ServerOptions opts;
  ServerHandler* handler = nullptr;
  net::io_context ioc;
  ssl::context ctx{ssl::context::tls_server};
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::atomic<uint64_t> next_id{1};
  std::atomic<uint64_t> bytes_in{0}, bytes_out{0};
  std::atomic<std::size_t> conns{0};
  std::atomic<bool> stopped{false};
  std::shared_ptr<ReadBudget> budget;
  std::mutex mu;
  std::unordered_map<uint64_t, std::weak_ptr<class ServerSession>> sessions;  // GUARDED_BY(mu)

  void Accept();
};

class ServerSession : public Peer, public std::enable_shared_from_this<ServerSession> {
 public:
  ServerSession(tcp::socket&& socket, Server::Impl* server)
      : ws_(std::move(socket), server->ctx),
        server_(server),
        id_(server->next_id++),
        pause_timer_(ws_.get_executor()),
        write_timer_(ws_.get_executor()) {
    beast::error_code ec;
    auto ep = beast::get_lowest_layer(ws_).socket().remote_endpoint(ec);
    remote_ = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  const std::string& identity() const override { return identity_; }
  uint64_t id() const override { return id_; }
  std::string remote() const override { return remote_; }

  void Run() {
    net::dispatch(ws_.get_executor(), [self = shared_from_this()] { self->OnRun(); });
  }

  bool Send(Frame frame) override {
    if (closing_.load()) return false;
    net::post(ws_.get_executor(), [self = shared_from_this(), frame = std::move(frame)]() mutable {
      self->DoSend(std::move(frame));
    });
    return true;
  }

  void Close(const std::string& why) override {
    net::post(ws_.get_executor(), [self = shared_from_this(), why] {
      self->close_reason_ = why;
      self->close_requested_ = true;
      if (!self->writing_ && self->queue_.empty()) self->DoClose();
    });
  }

  // Hard stop (server shutdown or a peer that does not read): drops the TCP connection.
  void Abort(const std::string& why) {
    net::post(ws_.get_executor(), [self = shared_from_this(), why] {
      self->close_reason_ = why;
      beast::error_code ec;
      beast::get_lowest_layer(self->ws_).socket().shutdown(tcp::socket::shutdown_both, ec);
      beast::get_lowest_layer(self->ws_).close();
      // A paused connection has no read that would fail and report the close.
      if (self->paused_) self->Finish(why);
    });
  }

 private:
  void OnRun() {
    beast::get_lowest_layer(ws_).expires_after(Seconds(server_->opts.handshake_timeout_s));
    ws_.next_layer().async_handshake(ssl::stream_base::server,
                                     [self = shared_from_this()](beast::error_code ec) { self->OnTls(ec); });
  }

  void OnTls(beast::error_code ec) {
    if (ec) {
      MLOG_WARN("transport", "TLS handshake failed").Kv("remote", remote_).Kv("error", ec.message());
      return;  // never opened: no OnClose
    }
    identity_ = PeerCommonName(ws_.next_layer().native_handle());
    if (identity_.empty()) {
      MLOG_WARN("transport", "client certificate has no subject CN").Kv("remote", remote_);
      return;
    }
    http::async_read(ws_.next_layer(), buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnRequest(ec); });
  }

  void OnRequest(beast::error_code ec) {
    if (ec) {
      MLOG_WARN("transport", "no WebSocket upgrade request").Kv("remote", remote_).Kv("error", ec.message());
      return;
    }
    if (!websocket::is_upgrade(request_) || request_.target() != kFederationPath) {
      MLOG_WARN("transport", "refused request").Kv("remote", remote_).Kv("target", std::string(request_.target()));
      auto res = std::make_shared<http::response<http::string_body>>(http::status::not_found, request_.version());
      res->set(http::field::content_type, "text/plain");
      res->body() = std::string("mlink federation lives at ") + kFederationPath + "\n";
      res->prepare_payload();
      http::async_write(ws_.next_layer(), *res, [self = shared_from_this(), res](beast::error_code, std::size_t) {
        beast::get_lowest_layer(self->ws_).close();
      });
      return;
    }
    beast::get_lowest_layer(ws_).expires_never();
    websocket::stream_base::timeout t;
    t.handshake_timeout = Seconds(server_->opts.handshake_timeout_s);
    t.idle_timeout = Seconds(server_->opts.idle_timeout_s);
    t.keep_alive_pings = true;
    ws_.set_option(t);
    ws_.read_message_max(server_->opts.limits.max_message_bytes);
    ws_.binary(true);
    ws_.async_accept(request_, [self = shared_from_this()](beast::error_code ec) { self->OnAccept(ec); });
  }

  void OnAccept(beast::error_code ec) {
    if (ec) {
      MLOG_WARN("transport", "WebSocket accept failed").Kv("remote", remote_).Kv("error", ec.message());
      return;
    }
    opened_ = true;
    ++server_->conns;
    {
      std::lock_guard<std::mutex> lock(server_->mu);
      server_->sessions[id_] = shared_from_this();
    }
    server_->handler->OnOpen(shared_from_this());
    buffer_.consume(buffer_.size());
    DoRead();
  }

  // A message is read in two steps: a first read of at most kFirstReadBytes shows its header,
  // hence its size; the whole message is then charged to the read budget (Charge) before the rest
  // is read into a buffer of exactly that size. Strand only, like everything below.
  static constexpr std::size_t kFirstReadBytes = 1536;

  void DoRead() {
    const std::size_t want = charged_ > 0 ? charged_ : kFirstReadBytes;
    // 0 would mean "no limit" to Beast; OnRead never asks for more once the buffer is full.
    assert(want > buffer_.size());
    ws_.async_read_some(buffer_, want - buffer_.size(),
                        [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->OnRead(ec, n); });
  }

  void OnRead(beast::error_code ec, std::size_t n) {
    if (ec) {
      DropMessage();
      if (ec == websocket::error::message_too_big) {
        server_->handler->OnBadFrame(shared_from_this(), RejectReason::kTooLarge, "message over the size limit");
      }
      return Finish(ec == websocket::error::closed ? "closed by peer" : ec.message());
    }
    server_->bytes_in += n;
    if (!ws_.got_binary()) return BadFrame(RejectReason::kMalformed, "text frame; federation messages are binary");
    if (charged_ > 0) {  // reading the rest of a charged message
      if (ws_.is_message_done()) return Deliver();
      if (buffer_.size() >= charged_) {
        return BadFrame(RejectReason::kMalformed, "the message is longer than its header announces");
      }
      return DoRead();
    }
    if (ws_.is_message_done()) return Charge(buffer_.size());  // a small message, read whole
    if (buffer_.size() < kHeaderBytes) return DoRead();
    auto data = buffer_.data();
    auto size = AnnouncedFrameSize(static_cast<const uint8_t*>(data.data()), data.size(), server_->opts.limits);
    if (!size.ok()) return BadFrame(ReasonFor(size.status()), size.status().message());
    if (*size <= buffer_.size()) {
      return BadFrame(RejectReason::kMalformed, "the message is longer than its header announces");
    }
    Charge(*size);
  }

  // Charges the message being read to the read budget, or pauses reads until it fits.
  void Charge(std::size_t bytes) {
    auto on_grant = [self = shared_from_this(), bytes] {
      net::post(self->ws_.get_executor(), [self, bytes] { self->OnCharged(bytes); });
    };
    if (server_->budget->Acquire(bytes, std::move(on_grant))) {
      charged_ = bytes;
      return ContinueMessage();
    }
    paused_ = true;
    SetIdleTimeout(false);  // our doing, not the peer's: no idle timeout while paused ...
    PingWhilePaused();      // ... and pings keep the peer's own idle timer fed
  }

  void OnCharged(std::size_t bytes) {
    paused_ = false;
    pause_timer_.cancel();
    charged_ = bytes;
    if (finished_ || close_requested_) return DropMessage();
    SetIdleTimeout(true);  // re-armed by the next read
    ContinueMessage();
  }

  void ContinueMessage() {
    if (ws_.is_message_done()) return Deliver();
    buffer_.reserve(charged_);
    DoRead();
  }

  void Deliver() {
    auto data = buffer_.data();
    auto msg = Decode(static_cast<const uint8_t*>(data.data()), data.size(), server_->opts.limits);
    // The lease now covers the decoded message; the raw bytes go at once.
    ReadLease lease = ReadBudget::Lease(server_->budget, std::exchange(charged_, 0));
    ReleaseBuffer();
    if (!msg.ok()) {
      BadFrame(ReasonFor(msg.status()), msg.status().message());
    } else {
      server_->handler->OnMessage(shared_from_this(), std::move(msg).value(), std::move(lease));
      if (!close_requested_) DoRead();
    }
  }

  // Forgets the message being read (error or close) and returns its charge.
  void DropMessage() {
    if (charged_ > 0) server_->budget->Release(std::exchange(charged_, 0));
    ReleaseBuffer();
  }

  void ReleaseBuffer() {
    buffer_.consume(buffer_.size());
    if (buffer_.capacity() > 2 * kFirstReadBytes) buffer_.shrink_to_fit();  // idle peers hold no big buffers
  }

  void SetIdleTimeout(bool on) {
    websocket::stream_base::timeout t;
    t.handshake_timeout = Seconds(server_->opts.handshake_timeout_s);
    t.idle_timeout = on ? Seconds(server_->opts.idle_timeout_s) : websocket::stream_base::none();
    t.keep_alive_pings = true;
    ws_.set_option(t);
  }

  void PingWhilePaused() {
    pause_timer_.expires_after(Seconds(server_->opts.idle_timeout_s / 2));
    pause_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || !self->paused_ || self->finished_ || self->close_sent_) return;
      if (!self->pinging_) {
        self->pinging_ = true;
        self->ws_.async_ping({}, [self](beast::error_code) { self->pinging_ = false; });
      }
      self->PingWhilePaused();
    });
  }

  void BadFrame(RejectReason reason, const std::string& why) {
    DropMessage();
    server_->handler->OnBadFrame(shared_from_this(), reason, why);
    Error err;
    err.reason = reason;
    err.text = why;
    DoSend(MakeFrame(err));
    close_reason_ = "bad frame: " + why;
    close_requested_ = true;
    closing_ = true;
  }

  void DoSend(Frame frame) {
    if (finished_ || (close_requested_ && !frame)) return;
    if (queue_.size() >= server_->opts.max_send_queue) {
      MLOG_WARN("transport", "peer does not read; dropping it").Kv("edge", identity_).Kv("queued", queue_.size());
      closing_ = true;
      Abort("send queue full");
      return;
    }
    queue_.push_back(std::move(frame));
    if (!writing_) DoWrite();
  }

  void DoWrite() {
    writing_ = true;
    ws_.async_write(net::buffer(*queue_.front()),
                    [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->OnWrite(ec, n); });
    // Beast's idle timeout watches reads only; a peer that sends pings but never reads would
    // hold its queue forever.
    const uint64_t seq = ++write_seq_;
    write_timer_.expires_after(Seconds(server_->opts.send_timeout_s));
    write_timer_.async_wait([self = shared_from_this(), seq](beast::error_code ec) {
      if (ec || !self->writing_ || seq != self->write_seq_ || self->finished_) return;
      MLOG_WARN("transport", "peer does not read; dropping it")
          .Kv("edge", self->identity_).Kv("queued", self->queue_.size())
          .Kv("stalled_s", self->server_->opts.send_timeout_s);
      self->closing_ = true;
      self->Abort("send stalled: the peer does not read");
    });
  }

  void OnWrite(beast::error_code ec, std::size_t n) {
    writing_ = false;
    write_timer_.cancel();
    if (ec) return Finish(ec.message());
    server_->bytes_out += n;
    queue_.pop_front();
    if (!queue_.empty()) return DoWrite();
    if (close_requested_) DoClose();
  }

  void DoClose() {
    if (close_sent_) return;
    close_sent_ = true;
    closing_ = true;
    ws_.async_close(websocket::close_code::normal, [self = shared_from_this()](beast::error_code ec) {
      self->Finish(self->close_reason_.empty() ? "closed" : self->close_reason_);
    });
  }

  void Finish(const std::string& why) {
    if (finished_ || !opened_) return;
    finished_ = true;
    closing_ = true;
    pause_timer_.cancel();
    write_timer_.cancel();
    --server_->conns;
    {
      std::lock_guard<std::mutex> lock(server_->mu);
      server_->sessions.erase(id_);
    }
    server_->handler->OnClose(shared_from_this(), close_reason_.empty() ? why : close_reason_);
  }

  WsStream ws_;
  Server::Impl* server_;
  uint64_t id_;
  std::string remote_;
  std::string identity_;
  beast::flat_buffer buffer_;
  http::request<http::empty_body> request_;
  std::deque<Frame> queue_;
  std::size_t charged_ = 0;   // read-budget bytes charged for the message being read
  bool paused_ = false;       // waiting for read budget; no read in flight
  bool pinging_ = false;
  net::steady_timer pause_timer_;
  net::steady_timer write_timer_;  // armed while a write is in flight
  uint64_t write_seq_ = 0;
  bool writing_ = false;
  bool opened_ = false;
  bool finished_ = false;
  bool close_requested_ = false;
  bool close_sent_ = false;
  std::string close_reason_;
  std::atomic<bool> closing_{false};
};

void Server::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (stopped.load()) return;
    if (!ec) {
      std::make_shared<ServerSession>(std::move(socket), this)->Run();
    } else {
      MLOG_WARN("transport", "accept failed").Kv("error", ec.message());
    }
    Accept();
  });
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() { Stop(); }

Result<std::unique_ptr<Server>> Server::Start(const ServerOptions& options, ServerHandler* handler) {
  auto impl = std::make_unique<Impl>();
  impl->opts = options;
  impl->handler = handler;
  impl->budget = std::make_shared<ReadBudget>(options.read_budget_bytes);
  MLINK_RETURN_IF_ERROR(LoadTls(impl->ctx, options.tls, true));
  beast::error_code ec;
  auto addr = net::ip::make_address(options.host, ec);
  if (ec) return Status::InvalidArgument("listen address '" + options.host + "': " + ec.message());
  tcp::endpoint ep(addr, options.port);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::Unavailable("cannot listen on " + options.host + ":" + std::to_string(options.port) + ": " + ec.message());
  }
  impl->Accept();
  for (int i = 0; i < std::max(1, options.io_threads); ++i) {
    impl->threads.emplace_back([p = impl.get()] { p->ioc.run(); });
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

void Server::Stop() {
  if (!impl_ || impl_->stopped.exchange(true)) return;
  net::post(impl_->acceptor.get_executor(), [p = impl_.get()] {
    beast::error_code ec;
    p->acceptor.close(ec);
  });
  std::vector<std::shared_ptr<ServerSession>> live;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (auto& [id, w] : impl_->sessions) {
      if (auto s = w.lock()) live.push_back(s);
    }
  }
  for (auto& s : live) s->Abort("aggregator shutting down");
  live.clear();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (impl_->conns.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  impl_->budget->Close();
}

uint16_t Server::port() const {
  beast::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? impl_->opts.port : ep.port();
}
std::size_t Server::connections() const { return impl_->conns.load(); }
uint64_t Server::bytes_in() const { return impl_->bytes_in.load(); }
uint64_t Server::bytes_out() const { return impl_->bytes_out.load(); }
std::size_t Server::read_budget_held() const { return impl_->budget->held(); }
std::size_t Server::reads_paused() const { return impl_->budget->waiting(); }
uint64_t Server::read_pauses_total() const { return impl_->budget->pauses(); }

// =================================================================================== client

struct ClientContext::Impl {
  net::io_context ioc;
  net::executor_work_guard<net::io_context::executor_type> guard{ioc.get_executor()};
  std::vector<std::thread> threads;
};

std::shared_ptr<ClientContext> ClientContext::Create(int threads) {
  std::shared_ptr<ClientContext> c(new ClientContext());
  c->impl_ = std::make_unique<Impl>();
  for (int i = 0; i < std::max(1, threads); ++i) c->impl_->threads.emplace_back([p = c->impl_.get()] { p->ioc.run(); });
  return c;
}

ClientContext::~ClientContext() {
  impl_->guard.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
}

struct Client::Impl : std::enable_shared_from_this<Client::Impl> {
  ClientOptions opts;
  OnMessage on_message;
  OnClose on_close;
  std::unique_ptr<net::io_context> own_ioc;  // when no shared ClientContext is given
  net::io_context* ioc = nullptr;
  ssl::context ctx{ssl::context::tls_client};
  std::unique_ptr<tcp::resolver> resolver;
  std::unique_ptr<WsStream> ws;
  beast::flat_buffer buffer;
  std::deque<Frame> queue;
  bool writing = false;
  bool close_requested = false;
  std::atomic<bool> open{false};
  std::atomic<bool> closed{false};
  std::atomic<std::size_t> queued{0};
  std::thread thread;
  std::promise<Status> connected;
  bool connect_reported = false;

  void Report(const Status& st) {
    if (!connect_reported) {
      connect_reported = true;
      connected.set_value(st);
    }
  }

  void Fail(const std::string& step, const beast::error_code& ec) {
    Status st = Status::Unavailable("federation " + opts.endpoint.ToString() + ": " + step + ": " + ec.message());
    if (!connect_reported) return Report(st);
    Closed(st);
  }

  void Closed(const Status& st) {
    open = false;
    if (closed.exchange(true)) return;
    std::lock_guard<std::mutex> lock(cb_mu);
    if (on_close) on_close(st);
  }

  // Callbacks never run after ~Client returned (they are cleared under cb_mu there).
  std::mutex cb_mu;

  void Start() {
    auto self = shared_from_this();
    resolver->async_resolve(opts.endpoint.host, std::to_string(opts.endpoint.port),
                           [self](beast::error_code ec, tcp::resolver::results_type results) {
                             if (ec) return self->Fail("resolve", ec);
                             beast::get_lowest_layer(*self->ws).expires_after(Seconds(self->opts.connect_timeout_s));
                             beast::get_lowest_layer(*self->ws).async_connect(
                                 results, [self](beast::error_code ec, tcp::endpoint) { self->OnConnect(ec); });
                           });
  }

  void OnConnect(beast::error_code ec) {
    if (ec) return Fail("connect", ec);
    const std::string& host = opts.verify_host.empty() ? opts.endpoint.host : opts.verify_host;
    SSL_set_tlsext_host_name(ws->next_layer().native_handle(), host.c_str());
    ws->next_layer().set_verify_callback(ssl::host_name_verification(host));
    auto self = shared_from_this();
    ws->next_layer().async_handshake(ssl::stream_base::client, [self](beast::error_code ec) {
      if (ec) return self->Fail("TLS handshake", ec);
      beast::get_lowest_layer(*self->ws).expires_never();
      websocket::stream_base::timeout t;
      t.handshake_timeout = Seconds(self->opts.connect_timeout_s);
      t.idle_timeout = Seconds(self->opts.idle_timeout_s);
      t.keep_alive_pings = true;
      self->ws->set_option(t);
      self->ws->read_message_max(self->opts.limits.max_message_bytes);
      self->ws->binary(true);
      std::string host_header = self->opts.endpoint.host + ":" + std::to_string(self->opts.endpoint.port);
      self->ws->async_handshake(host_header, self->opts.endpoint.path, [self](beast::error_code ec) {
        if (ec) return self->Fail("WebSocket handshake", ec);
        self->open = true;
        self->Report(Status::Ok());
        self->DoRead();
      });
    });
  }

  void DoRead() {
    auto self = shared_from_this();
    ws->async_read(buffer, [self](beast::error_code ec, std::size_t) {
      if (ec) {
        return self->Closed(ec == websocket::error::closed
                                ? Status::Unavailable("federation connection closed by the aggregator")
                                : Status::Unavailable("federation connection lost: " + ec.message()));
      }
      auto data = self->buffer.data();
      auto msg = Decode(static_cast<const uint8_t*>(data.data()), data.size(), self->opts.limits);
      self->buffer.consume(self->buffer.size());
      if (self->buffer.capacity() > (64u << 10)) self->buffer.shrink_to_fit();  // no big buffer between messages
      if (!msg.ok()) {
        MLOG_WARN("transport", "undecodable frame from aggregator").Kv("error", msg.status().message());
      } else {
        std::lock_guard<std::mutex> lock(self->cb_mu);
        if (self->on_message) self->on_message(std::move(msg).value());
      }
      self->DoRead();
    });
  }

  void DoSend(Frame f) {
    if (closed || close_requested) {
      --queued;
      return;
    }
    queue.push_back(std::move(f));
    if (!writing) DoWrite();
  }

  void DoWrite() {
    writing = true;
    auto self = shared_from_this();
    ws->async_write(net::buffer(*queue.front()), [self](beast::error_code ec, std::size_t) {
      self->writing = false;
      self->queue.pop_front();
      --self->queued;
      if (ec) return self->Closed(Status::Unavailable("federation send failed: " + ec.message()));
      if (!self->queue.empty()) return self->DoWrite();
      if (self->close_requested) self->DoClose();
    });
  }

  void DoClose() {
    auto self = shared_from_this();
    ws->async_close(websocket::close_code::normal, [self](beast::error_code) {
      self->Closed(Status::Unavailable("closed by this edge"));
    });
  }
};

Client::Client(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() {
  Close();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (impl_->open.load() && !impl_->closed.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (impl_->thread.joinable()) {
    impl_->ioc->stop();
    impl_->thread.join();
  } else if (!impl_->closed.load()) {
    // Shared I/O threads: drop the connection; pending handlers keep the Impl alive.
    net::post(impl_->ws->get_executor(), [p = impl_] { beast::get_lowest_layer(*p->ws).close(); });
  }
  std::lock_guard<std::mutex> lock(impl_->cb_mu);
  impl_->on_message = nullptr;
  impl_->on_close = nullptr;
}

Result<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options, OnMessage on_message, OnClose on_close) {
  auto impl = std::make_shared<Impl>();
  impl->opts = options;
  impl->on_message = std::move(on_message);
  impl->on_close = std::move(on_close);
  MLINK_RETURN_IF_ERROR(LoadTls(impl->ctx, options.tls, false));
  if (options.context) {
    impl->ioc = &options.context->impl()->ioc;
  } else {
    impl->own_ioc = std::make_unique<net::io_context>();
    impl->ioc = impl->own_ioc.get();
  }
  impl->resolver = std::make_unique<tcp::resolver>(net::make_strand(*impl->ioc));
  impl->ws = std::make_unique<WsStream>(net::make_strand(*impl->ioc), impl->ctx);
  auto fut = impl->connected.get_future();
  impl->Start();
  if (impl->own_ioc) impl->thread = std::thread([p = impl.get()] { p->ioc->run(); });
  std::unique_ptr<Client> client(new Client(impl));
  if (fut.wait_for(Seconds(options.connect_timeout_s + 1)) != std::future_status::ready) {
    return Status::DeadlineExceeded("federation " + options.endpoint.ToString() + ": no connection within " +
                                    std::to_string(options.connect_timeout_s) + " s");
  }
  Status st = fut.get();
  if (!st.ok()) return st;
  return client;
}

Status Client::Send(const Message& m) { return SendFrame(MakeFrame(m)); }

Status Client::SendFrame(Frame frame) {
  if (!impl_->open.load()) return Status::Unavailable("federation connection is not open");
  if (impl_->queued.load() >= impl_->opts.max_send_queue) {
    return Status::Unavailable("federation send queue full (" + std::to_string(impl_->opts.max_send_queue) + " frames)");
  }
  ++impl_->queued;
  net::post(impl_->ws->get_executor(), [p = impl_, frame = std::move(frame)]() mutable { p->DoSend(std::move(frame)); });
  return Status::Ok();
}

void Client::Close() {
  if (!impl_->open.load() || impl_->close_requested) return;
  net::post(impl_->ws->get_executor(), [p = impl_] {
    if (p->close_requested) return;
    p->close_requested = true;
    if (!p->writing && p->queue.empty()) p->DoClose();
  });
}

bool Client::connected() const { return impl_->open.load(); }

}  // namespace mlink::protocol
