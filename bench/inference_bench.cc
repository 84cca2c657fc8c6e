// Link inference: 100 vec2vec links (10 -> 20 -> 10) over N samples (default 1,000,000; the paper
// reports about a minute with 100 processes). Ours: BatchedPredictor (vec2vec links on its
// torch-free path: rows in cache-sized blocks, one thread per core). Baseline, measured in the
// same run: each link's own Predict (LibTorch, its default intra-op threads) in a loop.
// Prints one JSON line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

#include "mlink/link/batched.h"

using namespace mlink::link;

int main(int argc, char** argv) {
  const long samples = argc > 1 ? std::atol(argv[1]) : 1000000;
  const int num_links = 100, dim = 10, chunk = 50000;
  std::vector<std::unique_ptr<Link>> links;
  std::vector<const Link*> ptrs;
  LinkSpec spec;
  spec.source = OutputFormat::Vector(dim);
  spec.target = OutputFormat::Vector(dim);
  spec.task = TaskKind::kSingleLabel;
  for (int i = 0; i < num_links; ++i) {
    links.push_back(std::move(Link::Create(spec, 100 + i).value()));
    ptrs.push_back(links.back().get());
  }
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> v(static_cast<std::size_t>(chunk) * dim);
  for (auto& x : v) x = u(rng);
  Column in = Column::Vectors(dim, v);
  std::vector<const Column*> inputs(num_links, &in);
  auto bp = BatchedPredictor::Create(ptrs);
  if (!bp.ok()) {
    std::fprintf(stderr, "%s\n", bp.status().ToString().c_str());
    return 1;
  }
  const long chunks = (samples + chunk - 1) / chunk;
  double checksum_ours = 0, checksum_base = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (long c = 0; c < chunks; ++c) {
    auto out = (*bp)->Predict(inputs);
    checksum_ours += (*out)[c % num_links].values[0];
  }
  double ours = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  t0 = std::chrono::steady_clock::now();
  for (long c = 0; c < chunks; ++c) {
    for (int l = 0; l < num_links; ++l) {
      auto out = links[l]->Predict(in);
      if (l == c % num_links) checksum_base += out->values[0];
    }
  }
  double base = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("{\"bench\":\"link_inference\",\"links\":%d,\"samples\":%ld,\"ours_batched_s\":%.3f,"
              "\"baseline_per_link_libtorch_s\":%.3f,\"speedup\":%.2f,\"target_s\":5,\"outputs_agree\":%s,"
              "\"hardware_threads\":%u}\n",
              num_links, chunks * chunk, ours, base, base / ours,
              std::abs(checksum_ours - checksum_base) < 1e-3 ? "true" : "false", std::thread::hardware_concurrency());
  return 0;
}
