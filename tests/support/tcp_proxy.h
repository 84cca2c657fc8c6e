// Test support for fault tests: a TCP proxy on loopback that the test controls, placed between
// a federation client and the aggregator. It forwards bytes both ways, and on command drops
// them (a network cut: packets vanish, no connection is reset), stalls the way back to the
// client (a client that never reads), or cuts a connection after a given number of
// client-to-server bytes (a peer killed half-way through a frame).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace mlink::testing {

class TcpProxy {
 public:
  enum class Mode {
    kForward,    // both ways
    kDrop,       // read and discard both ways: the network is cut
    kDropDown,   // server -> client discarded (acks and pongs are lost), client -> server forwarded
    kStallDown,  // server -> client not read at all: the server's socket buffers fill
  };

  // Listens on 127.0.0.1 (any free port) and forwards to 127.0.0.1:`upstream`.
  // `upstream_rcvbuf` > 0 caps the receive buffer of the proxy's upstream sockets, so a stalled
  // way back fills the server's buffers after fewer bytes.
  explicit TcpProxy(uint16_t upstream, int upstream_rcvbuf = 0)
      : upstream_(upstream), rcvbuf_(upstream_rcvbuf) {
    listen_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = Loopback(0);
    int one = 1;
    ::setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        ::listen(listen_, 64) != 0)
      return;
    socklen_t len = sizeof(a);
    ::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (::pipe(wake_) != 0) return;
    thread_ = std::thread([this] { Loop(); });
  }
  ~TcpProxy() {
    stop_ = true;
    Wake();
    if (thread_.joinable()) thread_.join();
    for (auto& c : conns_) CloseConn(c);
    ::close(listen_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  uint16_t port() const { return port_; }
  void SetMode(Mode m) {
    mode_ = m;
    Wake();
  }
  // Every connection open now is closed once `bytes` more client -> server bytes have been
  // forwarded (the rest of what the client sent is lost).
  void CutUpAfter(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    cut_left_ = static_cast<long long>(bytes);
    Wake();
  }
  // Closes every open connection (both sides), as a restored network finds them dead.
  void CloseAll() {
    close_all_ = true;
    Wake();
    while (close_all_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  uint64_t up_bytes() const { return up_bytes_.load(); }
  uint64_t down_bytes() const { return down_bytes_.load(); }
  int accepted() const { return accepted_.load(); }
  int open_connections() const { return open_.load(); }

 private:
  struct Conn {
    int client = -1, server = -1;
  };
  static sockaddr_in Loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
  }
  void Wake() {
    char c = 1;
    (void)!::write(wake_[1], &c, 1);
  }
  void CloseConn(Conn& c) {
    if (c.client < 0) return;
    ::shutdown(c.client, SHUT_RDWR);
    ::shutdown(c.server, SHUT_RDWR);
    ::close(c.client);
    ::close(c.server);
    c.client = c.server = -1;
    --open_;
  }
  static bool SendAll(int fd, const char* p, std::size_t n) {
    while (n > 0) {
      ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }
  void Accept() {
    int c = ::accept(listen_, nullptr, nullptr);
    if (c < 0) return;
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf_ > 0) ::setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf_, sizeof(rcvbuf_));
    sockaddr_in a = Loopback(upstream_);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      ::close(c);
      ::close(s);
      return;
    }
    conns_.push_back({c, s});
    ++accepted_;
    ++open_;
  }
  // Moves what is readable on one side; false when the connection is over.
  bool Pump(Conn& c, bool up) {
    char buf[16384];
    const int from = up ? c.client : c.server, to = up ? c.server : c.client;
    std::size_t want = sizeof(buf);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (up && cut_left_ >= 0)
        want = std::min<std::size_t>(want, static_cast<std::size_t>(std::max(cut_left_, 1LL)));
    }
    ssize_t n = ::recv(from, buf, want, 0);
    if (n <= 0) return false;
    const Mode m = mode_.load();
    const bool drop = m == Mode::kDrop || (!up && m == Mode::kDropDown);
    if (drop) return true;
    if (!SendAll(to, buf, static_cast<std::size_t>(n))) return false;
    (up ? up_bytes_ : down_bytes_) += static_cast<uint64_t>(n);
    if (up) {
      std::lock_guard<std::mutex> lock(mu_);
      if (cut_left_ >= 0) {
        cut_left_ -= n;
        if (cut_left_ <= 0) {
          cut_left_ = -1;
          return false;
        }
      }
    }
    return true;
  }
  void Loop() {
    while (!stop_.load()) {
      if (close_all_.load()) {
        for (auto& c : conns_) CloseConn(c);
        conns_.clear();
        close_all_ = false;
      }
      std::vector<pollfd> fds = {{listen_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      const bool stall_down = mode_.load() == Mode::kStallDown;
      for (auto& c : conns_) {
        fds.push_back({c.client, POLLIN, 0});
        fds.push_back({c.server, static_cast<short>(stall_down ? 0 : POLLIN), 0});
      }
      if (::poll(fds.data(), fds.size(), 200) <= 0) continue;
      if (fds[1].revents & POLLIN) {
        char drain[64];
        (void)!::read(wake_[0], drain, sizeof(drain));
      }
      if (fds[0].revents & POLLIN) Accept();
      for (std::size_t i = 0; i < conns_.size() && 2 + 2 * i + 1 < fds.size(); ++i) {
        Conn& c = conns_[i];
        const short up_ev = fds[2 + 2 * i].revents, down_ev = fds[3 + 2 * i].revents;
        bool alive = true;
        if (up_ev & (POLLIN | POLLHUP | POLLERR)) alive = Pump(c, true);
        if (alive && (down_ev & (POLLIN | POLLHUP | POLLERR))) alive = Pump(c, false);
        if (!alive) CloseConn(c);
      }
      std::vector<Conn> live;
      for (auto& c : conns_) {
        if (c.client >= 0) live.push_back(c);
      }
      conns_.swap(live);
    }
  }

  const uint16_t upstream_;
  const int rcvbuf_;
  int listen_ = -1;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::atomic<Mode> mode_{Mode::kForward};
  std::atomic<bool> stop_{false};
  std::atomic<bool> close_all_{false};
  std::atomic<uint64_t> up_bytes_{0}, down_bytes_{0};
  std::atomic<int> accepted_{0}, open_{0};
  std::mutex mu_;
  long long cut_left_ = -1;  // GUARDED_BY(mu_); -1 = no cut armed
  std::vector<Conn> conns_;  // proxy thread only
  std::thread thread_;
};

}  // namespace mlink::testing
