// Shared set-up of the federation benches: file limits, edge certificates, the aggregator's
// options, edge client options and a counter to wait on.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>

#include "../tests/support/cloud_support.h"
#include "mlink/cloud/options.h"
#include "mlink/link/link.h"
#include "mlink/protocol/transport.h"

namespace mlink::bench {

// Lifts the soft limit on open files to the hard one: every edge holds a socket.
inline void RaiseFileLimit() {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

// Issues certificates for edges e0..e<max(max_k, 10)> into `certs` with scripts/gen-certs, unless
// e<max_k> is there already; `bench` names the caller in the message. False on failure.
inline bool EnsureEdgeCerts(const std::string& certs, int max_k, const char* bench) {
  if (std::filesystem::exists(certs + "/e" + std::to_string(max_k) + ".pem")) return true;
  std::string names;
  for (int i = 0; i <= std::max(max_k, 10); ++i) names += " e" + std::to_string(i);
  std::fprintf(stderr, "%s: issuing %d edge certificates (once) into %s\n", bench,
               std::max(max_k, 10) + 1, certs.c_str());
  return std::system((std::string(MLINK_SOURCE_DIR) + "/scripts/gen-certs " + certs + names +
                      " > /dev/null")
                         .c_str()) == 0;
}

// A vec2vec regression spec: `source` -> `target` values.
inline link::LinkSpec RegressionSpec(int source, int target) {
  return testing::VectorSpec(source, target, link::TaskKind::kRegression);
}

// An aggregator on any free ports with the cloud certificate of `certs`, its state in `data`,
// idle edges kept for 10 minutes; no links.
inline cloud::CloudOptions BenchCloudOptions(const std::string& certs, const std::string& data) {
  cloud::CloudOptions o = testing::CloudOptionsFor(certs, data);
  o.idle_timeout_s = 600;
  return o;
}

// Edge `name` of `certs` connecting to the aggregator on 127.0.0.1:`port` over `ctx`.
inline protocol::ClientOptions ClientFor(const std::string& certs, uint16_t port,
                                         const std::string& name,
                                         std::shared_ptr<protocol::ClientContext> ctx) {
  protocol::ClientOptions o;
  o.endpoint = {"127.0.0.1", port, protocol::kFederationPath};
  o.tls = {certs + "/ca.pem", certs + "/" + name + ".pem", certs + "/" + name + ".key"};
  o.connect_timeout_s = 60;
  o.idle_timeout_s = 600;
  o.context = std::move(ctx);
  return o;
}

// A count that threads add to and one thread waits on.
struct Counter {
  std::mutex mu;
  std::condition_variable cv;
  int n = 0;
  void Add() {
    std::lock_guard<std::mutex> l(mu);
    ++n;
    cv.notify_all();
  }
  bool WaitFor(int target, double secs) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, std::chrono::duration<double>(secs), [&] { return n >= target; });
  }
};

}  // namespace mlink::bench
