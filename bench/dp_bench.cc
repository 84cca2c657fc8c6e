// What differential privacy costs per update of d parameters: clipping plus Gaussian noise on
// one update (local DP, an edge's upload; central DP draws the same noise once per round on the
// sum), against the baseline every update already pays on the aggregator, folding it into the
// round's double-precision sum. One JSON line.
//
//   build/bin/bench_dp [params] [repeats]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "mlink/common/dp.h"

namespace {

using Clock = std::chrono::steady_clock;

template <typename F>
double BestMs(int repeats, F&& f) {
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const long params = argc > 1 ? std::atol(argv[1]) : 1000000;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 20;
  if (params <= 0 || repeats <= 0) {
    std::fprintf(stderr, "usage: %s [params > 0] [repeats > 0]\n", argv[0]);
    return 2;
  }
  std::vector<float> update(static_cast<std::size_t>(params));
  for (std::size_t i = 0; i < update.size(); ++i) update[i] = 0.001f * static_cast<float>(i % 97);
  std::vector<double> sum(update.size(), 0.0);
  mlink::dp::PrivacyOptions o;
  o.clip_norm = 1.0;
  o.noise_multiplier = 1.0;
  o.seed = 1;
  std::vector<float> work;
  uint64_t round = 0;
  const double privatize_ms = BestMs(repeats, [&] {
    work = update;
    mlink::dp::Privatize(o, round++, &work);
  });
  const double fold_ms = BestMs(repeats, [&] {
    work = update;
    for (std::size_t i = 0; i < work.size(); ++i) sum[i] += 1.0 * static_cast<double>(work[i]);
  });
  double check = 0;
  for (std::size_t i = 0; i < sum.size(); i += 4096) check += sum[i];
  std::printf("{\"bench\":\"dp_privatize\",\"params\":%ld,\"repeats\":%d,\"clip_and_noise_ms\":%.3f,"
              "\"baseline_fold_ms\":%.3f,\"ratio\":%.2f,\"checksum\":%.3f}\n",
              params, repeats, privatize_ms, fold_ms, privatize_ms / fold_ms, check);
  return 0;
}
