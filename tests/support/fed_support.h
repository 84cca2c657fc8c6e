// Test support for federation tests: certificates from scripts/gen-certs and a blocking edge.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mlink/protocol/codec.h"
#include "mlink/protocol/transport.h"

namespace mlink::testing {

// Runs scripts/gen-certs into `dir` for the given edge names; returns false on failure.
inline bool GenCerts(const std::string& dir, const std::string& edges) {
  std::string cmd = std::string(MLINK_SOURCE_DIR) + "/scripts/gen-certs " + dir + " " + edges + " > /dev/null";
  return std::system(cmd.c_str()) == 0;
}

inline std::string TempDir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("mlink-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

// A fresh temporary directory for the running test: `prefix` followed by the test's name.
inline std::string TestDir(const std::string& prefix) {
  return TempDir(prefix + ::testing::UnitTest::GetInstance()->current_test_info()->name());
}

// For SetUpTestSuite: a fresh directory `name` in `*certs` with certificates for `edges`; false if
// scripts/gen-certs failed.
inline bool NewSuiteCerts(std::string** certs, const std::string& name, const std::string& edges) {
  *certs = new std::string(TempDir(name));
  return GenCerts(**certs, edges);
}

// For TearDownTestSuite: removes the directory `*dir` made by NewSuiteCerts and frees it.
inline void DeleteSuiteDir(std::string** dir) {
  if (*dir == nullptr) return;
  std::filesystem::remove_all(**dir);
  delete *dir;
  *dir = nullptr;
}

// An update of `link` on top of global round `round`, with its checksum.
inline protocol::Update UpdateFor(const std::string& link, const std::vector<float>& delta,
                                  uint64_t round, uint64_t samples = 10) {
  protocol::Update u;
  u.link_id = link;
  u.base_round = round;
  u.delta = delta;
  u.samples = samples;
  u.checksum = protocol::ParamsChecksum(delta);
  return u;
}

// An edge connection whose received messages queue up for the test to take in order.
class TestEdge {
 public:
  static std::unique_ptr<TestEdge> Connect(const std::string& certs, const std::string& name, uint16_t port,
                                           Status* error = nullptr, const std::string& ca_dir = "",
                                           const std::string& verify_host = "") {
    auto e = std::make_unique<TestEdge>();
    protocol::ClientOptions o;
    o.endpoint.host = "127.0.0.1";
    o.endpoint.port = port;
    o.endpoint.path = protocol::kFederationPath;
    o.tls = {(ca_dir.empty() ? certs : ca_dir) + "/ca.pem", certs + "/" + name + ".pem", certs + "/" + name + ".key"};
    o.verify_host = verify_host;
    o.connect_timeout_s = 5;
    TestEdge* raw = e.get();
    auto c = protocol::Client::Connect(
        o, [raw](protocol::Message m) { raw->Push(std::move(m)); },
        [raw](const Status& s) {
          std::lock_guard<std::mutex> lock(raw->mu_);
          raw->closed_ = true;
          raw->cv_.notify_all();
        });
    if (!c.ok()) {
      if (error) *error = c.status();
      return nullptr;
    }
    e->client_ = std::move(c).value();
    return e;
  }

  template <typename T>
  std::optional<T> Next(double timeout_s = 10) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [this] { return !queue_.empty(); })) {
      ADD_FAILURE() << "no message within " << timeout_s << " s";
      return std::nullopt;
    }
    protocol::Message m = std::move(queue_.front());
    queue_.pop_front();
    if (auto* t = std::get_if<T>(&m)) return *t;
    ADD_FAILURE() << "expected another message type, got " << protocol::MessageTypeName(protocol::TypeOf(m));
    return std::nullopt;
  }

  bool WaitClosed(double timeout_s = 10) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [this] { return closed_; });
  }

  std::size_t pending() {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.size();
  }

  protocol::Client& client() { return *client_; }

 private:
  void Push(protocol::Message m) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(m));
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<protocol::Message> queue_;  // GUARDED_BY(mu_)
  bool closed_ = false;                  // GUARDED_BY(mu_)
  // Last, so it is destroyed first: ~Client stops its I/O thread, whose callbacks use the above.
  std::unique_ptr<protocol::Client> client_;
};

}  // namespace mlink::testing
