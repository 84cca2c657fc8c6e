// The server transport's read budget over real mutual TLS on loopback: a handler that holds its
// leases pauses the reads of other connections, writes go on meanwhile, the idle timeout spares a
// paused connection, and releasing a lease resumes it.
#include "mlink/protocol/transport.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "../support/fed_support.h"

namespace mlink::protocol {
namespace {

using Clock = std::chrono::steady_clock;

// Keeps every message with its lease until the test releases it.
class HoldingHandler : public ServerHandler {
 public:
  struct Held {
    std::shared_ptr<Peer> peer;
    Message message;
    ReadLease lease;
  };
  void OnOpen(const std::shared_ptr<Peer>& peer) override {
    std::lock_guard<std::mutex> lock(mu_);
    opened_.push_back(peer);
  }
  void OnMessage(const std::shared_ptr<Peer>& peer, Message m, ReadLease lease) override {
    std::lock_guard<std::mutex> lock(mu_);
    held_.push_back({peer, std::move(m), std::move(lease)});
    cv_.notify_all();
  }
  void OnBadFrame(const std::shared_ptr<Peer>&, RejectReason, const std::string&) override {}
  void OnClose(const std::shared_ptr<Peer>&, const std::string&) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++closed_;
  }
  // Waits until `n` messages are held.
  bool WaitHeld(std::size_t n, double timeout_s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return held_.size() >= n; });
  }
  std::size_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }
  int closed() {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }
  std::shared_ptr<Peer> Opened(const std::string& identity) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : opened_) {
      if (p->identity() == identity) return p;
    }
    return nullptr;
  }
  // Sessions must not outlive their Server: drop them once it has stopped.
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    held_.clear();
    opened_.clear();
  }
  Held Take(std::size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(held_.at(i));
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Held> held_;  // GUARDED_BY(mu_)
  std::vector<std::shared_ptr<Peer>> opened_;  // GUARDED_BY(mu_)
  int closed_ = 0;         // GUARDED_BY(mu_)
};

// A client that counts what it receives and whether it was closed.
struct Edge {
  std::mutex mu;
  std::condition_variable cv;
  int messages = 0;
  bool closed = false;
  std::unique_ptr<Client> client;

  bool WaitMessages(int n, double timeout_s) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return messages >= n; });
  }
};

class ProtocolTransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certs_ = new std::string(mlink::testing::TempDir("transport-certs"));
    ASSERT_TRUE(mlink::testing::GenCerts(*certs_, "site-a site-b"));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*certs_);
    delete certs_;
  }

  static ServerOptions Options(std::size_t budget, double idle_s) {
    ServerOptions o;
    o.tls = {*certs_ + "/ca.pem", *certs_ + "/cloud.pem", *certs_ + "/cloud.key"};
    o.idle_timeout_s = idle_s;
    o.read_budget_bytes = budget;
    return o;
  }

  static std::unique_ptr<Edge> Connect(const std::string& name, uint16_t port, double idle_s) {
    auto e = std::make_unique<Edge>();
    ClientOptions o;
    o.endpoint = {"127.0.0.1", port, kFederationPath};
    o.tls = {*certs_ + "/ca.pem", *certs_ + "/" + name + ".pem", *certs_ + "/" + name + ".key"};
    o.connect_timeout_s = 5;
    o.idle_timeout_s = idle_s;
    Edge* raw = e.get();
    auto c = Client::Connect(
        o,
        [raw](Message) {
          std::lock_guard<std::mutex> lock(raw->mu);
          ++raw->messages;
          raw->cv.notify_all();
        },
        [raw](const Status&) {
          std::lock_guard<std::mutex> lock(raw->mu);
          raw->closed = true;
          raw->cv.notify_all();
        });
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return nullptr;
    e->client = std::move(c).value();
    return e;
  }

  static Update Big(std::size_t n) {
    Update u;
    u.link_id = "l";
    u.delta.assign(n, 0.5f);
    u.checksum = ParamsChecksum(u.delta);
    return u;
  }

  static std::string* certs_;
};
std::string* ProtocolTransportTest::certs_ = nullptr;

TEST_F(ProtocolTransportTest, HeldLeasesPauseReadsWhileWritesAndTheConnectionGoOn) {
  constexpr double kIdle = 1.0;  // seconds, on both ends
  const std::size_t n = 50000;   // 200 KB per update
  const std::size_t frame = Encode(Big(n)).size();
  HoldingHandler handler;
  auto server = Server::Start(Options(frame + frame / 2, kIdle), &handler);  // room for one update
  ASSERT_TRUE(server.ok()) << server.status();
  auto a = Connect("site-a", (*server)->port(), kIdle);
  auto b = Connect("site-b", (*server)->port(), kIdle);
  ASSERT_TRUE(a && b);

  ASSERT_TRUE(a->client->Send(Big(n)).ok());
  ASSERT_TRUE(handler.WaitHeld(1, 10));
  EXPECT_EQ((*server)->read_budget_held(), frame);
  ASSERT_TRUE(b->client->Send(Big(n)).ok());
  // b's update does not fit beside a's held one: b's reads pause.
  auto until = Clock::now() + std::chrono::seconds(10);
  while ((*server)->reads_paused() == 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ((*server)->reads_paused(), 1u);
  EXPECT_GE((*server)->read_pauses_total(), 1u);

  // Paused for over five idle timeouts, first with nothing to send, then with writes: the
  // connection stays (neither end's idle timeout fires), and writes to it go on.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ((*server)->connections(), 2u);
  std::shared_ptr<Peer> peer_b = handler.Opened("site-b");
  ASSERT_TRUE(peer_b);
  for (int i = 1; i <= 30; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Ack ack;
    ack.link_id = "l";
    ack.received = static_cast<uint32_t>(i);
    EXPECT_TRUE(peer_b->Send(ack));
    EXPECT_TRUE(b->WaitMessages(i, 5)) << "write " << i << " to a paused connection";
  }
  EXPECT_EQ(handler.held(), 1u) << "b's update must wait for budget";
  EXPECT_EQ((*server)->connections(), 2u);
  EXPECT_EQ(handler.closed(), 0);
  {
    std::lock_guard<std::mutex> lock(b->mu);
    EXPECT_FALSE(b->closed) << "the paused edge's own idle timeout must not fire either";
  }

  // Releasing a's lease resumes b; b's update arrives whole.
  handler.Take(0).lease.Release();
  ASSERT_TRUE(handler.WaitHeld(2, 10));
  auto second = handler.Take(1);
  ASSERT_TRUE(std::holds_alternative<Update>(second.message));
  EXPECT_EQ(std::get<Update>(second.message).delta.size(), n);
  EXPECT_EQ(second.peer->identity(), "site-b");
  EXPECT_EQ((*server)->reads_paused(), 0u);
  EXPECT_EQ((*server)->read_budget_held(), frame);
  second.lease.Release();
  EXPECT_EQ((*server)->read_budget_held(), 0u);
  second = {};
  peer_b.reset();
  (*server)->Stop();
  handler.Clear();
}

TEST_F(ProtocolTransportTest, MessageLargerThanTheWholeBudgetPassesAlone) {
  const std::size_t n = 50000;
  const std::size_t frame = Encode(Big(n)).size();
  HoldingHandler handler;
  auto server = Server::Start(Options(frame / 4, 60), &handler);
  ASSERT_TRUE(server.ok()) << server.status();
  auto a = Connect("site-a", (*server)->port(), 60);
  ASSERT_TRUE(a);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(a->client->Send(Big(n)).ok());
  ASSERT_TRUE(handler.WaitHeld(1, 10));
  EXPECT_EQ((*server)->read_budget_held(), frame);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(handler.held(), 1u) << "the second waits until the first is released";
  handler.Take(0).lease.Release();
  ASSERT_TRUE(handler.WaitHeld(2, 10));
  EXPECT_EQ(std::get<Update>(handler.Take(1).message).delta.size(), n);
  EXPECT_EQ((*server)->read_budget_held(), 0u);
  (*server)->Stop();
  handler.Clear();
}

}  // namespace
}  // namespace mlink::protocol
