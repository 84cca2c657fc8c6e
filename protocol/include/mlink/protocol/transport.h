// The federation transport for both ends: binary WebSocket messages over TLS (Boost.Beast on
// Boost.Asio + OpenSSL) at wss://HOST:PORT/v1/federation, with mutual TLS.
//
// Server: every connection must present a client certificate signed by the deployment CA (else
// the TLS handshake fails); the peer's identity is the certificate subject's CN. Each connection
// runs on its own strand; frames are decoded there (cheap) and handed to the ServerHandler, which
// must not block (post heavy work to a worker). Peer::Send may be called from any thread: it
// posts to the connection's strand, where a bounded queue keeps one write in flight; a peer whose
// queue overflows, or whose write in flight makes no progress for send_timeout_s (a client that
// does not read), is disconnected instead of growing memory.
//
// Read budget: the bytes of every received message, from its first read until the handler
// releases its ReadLease, count against one budget shared by all connections
// (ServerOptions::read_budget_bytes). A connection reads a message's header first, then charges
// the whole message before reading the rest; when it does not fit, that connection's reads pause
// (TCP flow control holds the sender back) and resume on its own strand once released bytes make
// room, in arrival order. Writes go on while reads are paused, and the idle timeout does not apply
// to a paused connection (the server keeps pinging it instead). So what the server holds in
// received messages is bounded by the budget, however many peers send at once.
//
// Client: verifies the server certificate against the CA and the server's host name, presents
// its own certificate, and delivers decoded messages on its own I/O thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mlink/common/status.h"
#include "mlink/protocol/codec.h"
#include "mlink/protocol/endpoint.h"
#include "mlink/protocol/messages.h"

namespace mlink::protocol {

struct TlsFiles {
  std::string ca_file;    // PEM: the deployment CA
  std::string cert_file;  // PEM: this end's certificate (chain)
  std::string key_file;   // PEM: its private key
};

using Frame = std::shared_ptr<const std::vector<uint8_t>>;
Frame MakeFrame(const Message& m);

class ReadBudget;  // internal: the byte budget shared by a server's connections

// The budget charge of one received message. Move-only; destroying it (or Release) returns the
// bytes, which may resume paused connections. Any thread may release it, also after the Server
// has stopped.
class ReadLease {
 public:
  ReadLease() = default;
  ReadLease(ReadLease&& other) noexcept;
  ReadLease& operator=(ReadLease&& other) noexcept;
  ReadLease(const ReadLease&) = delete;
  ReadLease& operator=(const ReadLease&) = delete;
  ~ReadLease();
  std::size_t bytes() const { return bytes_; }
  void Release();

 private:
  friend class ReadBudget;
  ReadLease(std::shared_ptr<ReadBudget> budget, std::size_t bytes) : budget_(std::move(budget)), bytes_(bytes) {}
  std::shared_ptr<ReadBudget> budget_;
  std::size_t bytes_ = 0;
};

class Peer {
 public:
  virtual ~Peer() = default;
  // Certificate subject CN of the edge (authenticated by TLS).
  virtual const std::string& identity() const = 0;
  virtual uint64_t id() const = 0;
  virtual std::string remote() const = 0;
  // Thread-safe; queues the frame. Returns false if the peer is closing or its queue is full
  // (then it is being disconnected).
  virtual bool Send(Frame frame) = 0;
  bool Send(const Message& m) { return Send(MakeFrame(m)); }
  // Sends nothing more and closes the WebSocket (after queued frames).
  virtual void Close(const std::string& why) = 0;
};

class ServerHandler {
 public:
  virtual ~ServerHandler() = default;
  virtual void OnOpen(const std::shared_ptr<Peer>& peer) = 0;
  // A decoded message. Malformed frames never get here: the transport answers them with Error
  // and closes, and reports them through OnBadFrame. `lease` holds the message's bytes against
  // the read budget: keep it while the message is held (queued, not yet processed) and drop it
  // as soon as the message's memory is gone, or reads stay paused.
  virtual void OnMessage(const std::shared_ptr<Peer>& peer, Message message, ReadLease lease) = 0;
  virtual void OnBadFrame(const std::shared_ptr<Peer>& peer, RejectReason reason, const std::string& why) = 0;
  virtual void OnClose(const std::shared_ptr<Peer>& peer, const std::string& why) = 0;
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0 = any free port (see Server::port())
  TlsFiles tls;
  Limits limits;
  double handshake_timeout_s = 10;
  double idle_timeout_s = 60;     // no traffic (pings included) for this long closes a peer
  std::size_t max_send_queue = 256;  // frames queued per peer before it is dropped
  // A frame not written within this long means the peer does not read (its socket buffers are
  // full): it is dropped with a log line. Pings it sends do not keep it; reads do not matter.
  double send_timeout_s = 60;
  int io_threads = 2;
  // Received messages not yet released by the handler, all connections together (see "Read
  // budget" above). A single message larger than this is still read, once nothing else is held.
  std::size_t read_budget_bytes = 64u << 20;
};

class Server {
 public:
  // Loads the certificates (errors name the file), binds and starts the I/O threads.
  static Result<std::unique_ptr<Server>> Start(const ServerOptions& options, ServerHandler* handler);
  ~Server();  // stops
  void Stop();
  uint16_t port() const;
  std::size_t connections() const;
  uint64_t bytes_in() const;
  uint64_t bytes_out() const;
  // Read budget: bytes held now, connections whose reads are paused now, pauses so far.
  std::size_t read_budget_held() const;
  std::size_t reads_paused() const;
  uint64_t read_pauses_total() const;

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// I/O threads shared by many clients (e.g. a load generator holding thousands of connections);
// without one, each Client runs its own I/O thread.
class ClientContext {
 public:
  static std::shared_ptr<ClientContext> Create(int threads);
  ~ClientContext();
  struct Impl;
  Impl* impl() const { return impl_.get(); }

 private:
  ClientContext() = default;
  std::unique_ptr<Impl> impl_;
};

struct ClientOptions {
  Endpoint endpoint;
  TlsFiles tls;
  Limits limits;
  // Host name the server certificate must carry; empty = endpoint.host.
  std::string verify_host;
  double connect_timeout_s = 10;
  double idle_timeout_s = 60;
  std::size_t max_send_queue = 256;
  std::shared_ptr<ClientContext> context;  // optional shared I/O threads
};

class Client {
 public:
  using OnMessage = std::function<void(Message)>;
  using OnClose = std::function<void(const Status&)>;
  // Connects (TCP, TLS, WebSocket upgrade) within connect_timeout_s, then reads on an internal
  // thread. Failures name the endpoint and the step (e.g. "TLS handshake: certificate verify
  // failed"). Callbacks run on the client's I/O thread.
  static Result<std::unique_ptr<Client>> Connect(const ClientOptions& options, OnMessage on_message, OnClose on_close);
  ~Client();  // closes
  // Thread-safe; queued, one write in flight.
  Status Send(const Message& m);
  Status SendFrame(Frame frame);
  void Close();
  bool connected() const;

  struct Impl;

 private:
  explicit Client(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace mlink::protocol
