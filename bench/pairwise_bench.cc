// Pairwise training of all links among 7 models with output formats like the paper's (vector
// dims 2, 12, 4, 4, 1 and two sequence models), 1,000 samples, 100 epochs.
//   ours:      TrainPairwise: each architecture's links on the torch-free trainer (hand-written
//              backward passes, a register-blocked matrix kernel; repeated token sequences
//              encoded once per batch)
//   baseline:  the same links one at a time in LibTorch (Link::Train), and one at a time in
//              PyTorch (bench/pairwise_baseline.py, Debian's python3), measured in this run.
// All three train the same architectures from the same initial parameters (each link's
// Link::Create(spec, seed), handed to the PyTorch script) on the same split and the same
// mini-batch order for the same epochs, and report the mean over links of the best validation
// loss, so their losses differ only by float rounding. Ours splits each group's links across
// `threads` threads; LibTorch ops run on one intra-op thread and the PyTorch script gets as
// many intra-op threads as ours has threads. Ours runs twice, before and after the baselines,
// and the slower run is the one compared. Prints one JSON line with wall seconds and, since the
// machine may be shared, process CPU seconds of each trainer (the ratios that load changes least).
// Usage: bench_pairwise [epochs] [python3] [script] [threads (default 1)]
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <unistd.h>

#include "mlink/link/batched.h"

using namespace mlink::link;

namespace {

struct Data {
  std::vector<ModelOutputSpec> specs;
  std::vector<std::string> tasks;
  std::vector<Column> outputs;
};

Data Make(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> m0, m1, m2, m3, m4;
  std::vector<std::vector<int32_t>> m5, m6;
  auto peaked = [&](int dim, int cls, float noise, std::vector<float>* out) {
    std::vector<float> v(dim);
    float sum = 0;
    for (int i = 0; i < dim; ++i) sum += v[i] = noise * u(rng) + (i == cls ? 1.0f : 0.0f);
    for (float x : v) out->push_back(x / sum);
  };
  for (int r = 0; r < n; ++r) {
    int z = static_cast<int>(rng() % 12);
    peaked(2, z % 2, 0.4f, &m0);
    peaked(12, z, 0.6f, &m1);
    for (int b = 0; b < 4; ++b) m2.push_back(((z >> b) & 1) ? 0.9f - 0.1f * u(rng) : 0.1f * u(rng));
    float x = z / 12.0f + 0.02f * u(rng), y = (z % 3) / 3.0f + 0.02f * u(rng);
    for (float v : {x, y, x + 0.2f, y + 0.3f}) m3.push_back(v);
    m4.push_back(static_cast<float>(z / 3));
    std::vector<int32_t> s5 = {3 + z, 15 + z % 4};
    if (z % 2) s5.push_back(19);
    m5.push_back(s5);
    std::vector<int32_t> s6;
    for (int q = z + 1; q > 0; q /= 3) s6.push_back(3 + q % 3 + 3 * static_cast<int>(s6.size()));
    m6.push_back(s6);
  }
  Data d;
  d.specs = {{OutputFormat::Vector(2), TaskKind::kSingleLabel},  {OutputFormat::Vector(12), TaskKind::kSingleLabel},
             {OutputFormat::Vector(4), TaskKind::kMultiLabel},   {OutputFormat::Vector(4), TaskKind::kBox},
             {OutputFormat::Vector(1), TaskKind::kCount},        {OutputFormat::Sequence(20, 3), TaskKind::kSequence},
             {OutputFormat::Sequence(16, 4), TaskKind::kSequence}};
  d.tasks = {"single_label", "single_label", "multi_label", "box", "count", "sequence", "sequence"};
  d.outputs = {Column::Vectors(2, m0), Column::Vectors(12, m1), Column::Vectors(4, m2), Column::Vectors(4, m3),
               Column::Vectors(1, m4), Column::Sequences(m5),   Column::Sequences(m6)};
  return d;
}

double Mean(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / v.size(); }
double CpuSeconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

}  // namespace

int main(int argc, char** argv) {
  const int epochs = argc > 1 ? std::atoi(argv[1]) : 100;
  const std::string python = argc > 2 ? argv[2] : "/usr/bin/python3";
  const std::string script = argc > 3 ? argv[3] : std::string(MLINK_BENCH_DIR) + "/pairwise_baseline.py";
  const int n = 1000;
  const uint64_t seed = 1;
  SetTorchThreads(1);  // one intra-op thread: these ops are far too small to split
  Data d = Make(n, 42);
  TrainOptions o;
  o.epochs = epochs;
  o.patience = epochs + 1;  // no early stop: every trainer does the same work
  o.seed = seed;

  // ours: run before the baselines and again after them; the slower run of the two goes into the
  // ratios (load on a shared machine drifts over the minutes the baselines take).
  PairwiseOptions po;
  po.train = o;
  const int threads = argc > 4 ? std::max(1, std::atoi(argv[4])) : 1;
  po.threads = threads;
  auto t0 = std::chrono::steady_clock::now();
  double c0 = CpuSeconds();
  po.progress = [&](const std::string& arch, int links, int epoch, int epochs, double) {
    if (epoch == epochs) {
      std::fprintf(stderr, "ours: %s group of %d links done after %.2f s\n", arch.c_str(), links,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  };
  auto res = TrainPairwise(d.specs, d.outputs, po);
  double ours_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double ours_cpu = CpuSeconds() - c0;
  if (!res.ok()) {
    std::fprintf(stderr, "%s\n", res.status().ToString().c_str());
    return 1;
  }
  std::vector<double> ours_loss;
  for (const auto& r : *res) ours_loss.push_back(r.report.validation_loss);

  // per-link loop in LibTorch
  std::vector<double> loop_loss;
  t0 = std::chrono::steady_clock::now();
  c0 = CpuSeconds();
  std::map<std::string, double> loop_arch_s;
  for (const auto& r : *res) {
    auto t_link = std::chrono::steady_clock::now();
    LinkSpec s = r.link->spec();
    auto link = Link::Create(s, seed);
    auto rep = (*link)->Train(d.outputs[r.source], d.outputs[r.target], o);
    if (!rep.ok()) {
      std::fprintf(stderr, "%s\n", rep.status().ToString().c_str());
      return 1;
    }
    loop_loss.push_back(rep->validation_loss);
    loop_arch_s[s.ArchName()] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_link).count();
  }
  for (const auto& [arch, secs] : loop_arch_s) std::fprintf(stderr, "libtorch loop: %s links: %.2f s\n", arch.c_str(), secs);
  double loop_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double loop_cpu = CpuSeconds() - c0;

  // The same split and per-epoch mini-batch order the trainer uses (its generator, drawn in
  // its order), and each link's initial parameters, handed to the PyTorch baseline.
  std::mt19937_64 rng(seed);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  int n_val = static_cast<int>(n * o.validation_share);
  std::vector<int64_t> val(order.begin(), order.begin() + n_val), train(order.begin() + n_val, order.end());
  std::sort(val.begin(), val.end());
  nlohmann::json j;
  j["seed"] = seed;
  j["threads"] = threads;
  j["epochs"] = epochs;
  j["val"] = val;
  j["train"] = train;
  for (int e = 0; e < epochs; ++e) {
    std::shuffle(train.begin(), train.end(), rng);
    j["epoch_orders"].push_back(train);
  }
  j["embed_dim"] = po.embed_dim;
  j["lstm_hidden"] = po.lstm_hidden;
  for (const auto& r : *res) {
    mlink::FlatParams init = (*Link::Create(r.link->spec(), seed))->GetParams();
    nlohmann::json lj;
    std::size_t offset = 0;
    for (std::size_t t = 0; t < init.names.size(); ++t) {
      std::size_t count = 1;
      for (int64_t dim : init.shapes[t]) count *= static_cast<std::size_t>(dim);
      lj[init.names[t]] = {{"shape", init.shapes[t]},
                           {"values", std::vector<float>(init.data.begin() + offset, init.data.begin() + offset + count)}};
      offset += count;
    }
    j["init"].push_back(lj);
  }
  for (std::size_t m = 0; m < d.specs.size(); ++m) {
    nlohmann::json mj, f;
    const auto& fmt = d.specs[m].format;
    f["kind"] = fmt.kind == FormatKind::kVector ? "vector" : "sequence";
    f["dim"] = fmt.dim;
    f["vocab"] = fmt.vocab;
    f["max_len"] = fmt.max_len;
    mj["format"] = f;
    mj["task"] = d.tasks[m];
    const Column& c = d.outputs[m];
    if (c.kind == FormatKind::kVector) {
      for (std::size_t r = 0; r < c.rows(); ++r) mj["outputs"].push_back(std::vector<float>(c.row(r), c.row(r) + c.dim));
    } else {
      mj["outputs"] = c.seqs;
    }
    j["models"].push_back(mj);
  }
  std::string path = "/tmp/mlink-bench-pairwise-" + std::to_string(::getpid()) + ".json";
  std::ofstream(path) << j.dump();
  // The same one-thread BLAS as SetTorchThreads(1) gives ours (PyTorch's set_num_threads does
  // not reach the pool of Debian's BLAS either; its spinning workers slow small ops down).
  std::string cmd = "OPENBLAS_NUM_THREADS=1 " + python + " " + script + " " + path;
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && fgets(buf, sizeof(buf), p)) out += buf;
  int rc = p ? pclose(p) : -1;
  std::remove(path.c_str());
  double py_s = -1, py_cpu = -1, py_loss = -1;
  std::vector<double> py_losses;
  if (rc == 0) {
    auto pj = nlohmann::json::parse(out, nullptr, false);
    if (!pj.is_discarded()) {
      py_s = pj["seconds"];
      py_cpu = pj.value("cpu_seconds", -1.0);
      py_loss = pj["mean_val_loss"];
      py_losses = pj["val_losses"].get<std::vector<double>>();
    }
  } else {
    std::fprintf(stderr, "pytorch baseline failed (%s): %s\n", cmd.c_str(), out.c_str());
  }
  po.progress = nullptr;
  t0 = std::chrono::steady_clock::now();
  c0 = CpuSeconds();
  auto again = TrainPairwise(d.specs, d.outputs, po);
  const double again_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double again_cpu = CpuSeconds() - c0;
  if (!again.ok()) {
    std::fprintf(stderr, "%s\n", again.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "ours: %.2f s (CPU %.2f s) before the baselines, %.2f s (CPU %.2f s) after\n", ours_s, ours_cpu,
               again_s, again_cpu);
  const double ours_runs_s[2] = {ours_s, again_s}, ours_runs_cpu[2] = {ours_cpu, again_cpu};
  ours_s = std::max(ours_s, again_s);
  ours_cpu = std::max(ours_cpu, again_cpu);
  // Per link (stderr) and per architecture (in the JSON line): mean best validation loss of
  // each trainer. The PyTorch script trains the pairs in the same order.
  std::map<std::string, std::vector<double>> arch_ours, arch_loop, arch_py;
  for (std::size_t i = 0; i < res->size(); ++i) {
    const auto& r = (*res)[i];
    const std::string arch = r.link->spec().ArchName();
    double py = i < py_losses.size() ? py_losses[i] : -1;
    std::fprintf(stderr, "link %d -> %d (%s): ours %.4f, libtorch loop %.4f, pytorch %.4f\n", r.source, r.target,
                 arch.c_str(), ours_loss[i], loop_loss[i], py);
    arch_ours[arch].push_back(ours_loss[i]);
    arch_loop[arch].push_back(loop_loss[i]);
    if (i < py_losses.size()) arch_py[arch].push_back(py);
  }
  std::string per_arch;
  for (const auto& [arch, v] : arch_ours) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s\"%s\":{\"links\":%zu,\"ours\":%.4f,\"libtorch_loop\":%.4f,\"pytorch\":%.4f}",
                  per_arch.empty() ? "" : ",", arch.c_str(), v.size(), Mean(v), Mean(arch_loop[arch]),
                  arch_py[arch].empty() ? -1.0 : Mean(arch_py[arch]));
    per_arch += buf;
  }
  std::printf("{\"bench\":\"pairwise_training\",\"links\":%zu,\"samples\":%d,\"epochs\":%d,\"ours_threads\":%d,"
              "\"ours_batched_s\":%.2f,\"ours_runs_s\":[%.2f,%.2f],\"ours_runs_cpu_s\":[%.2f,%.2f],"
              "\"libtorch_per_link_s\":%.2f,\"pytorch_per_link_s\":%.2f,"
              "\"speedup_vs_libtorch_loop\":%.2f,\"speedup_vs_pytorch_loop\":%.2f,"
              "\"ours_cpu_s\":%.2f,\"libtorch_per_link_cpu_s\":%.2f,\"pytorch_per_link_cpu_s\":%.2f,"
              "\"cpu_speedup_vs_libtorch_loop\":%.2f,\"cpu_speedup_vs_pytorch_loop\":%.2f,"
              "\"ours_mean_val_loss\":%.4f,\"libtorch_loop_mean_val_loss\":%.4f,\"pytorch_mean_val_loss\":%.4f,"
              "\"mean_val_loss_by_arch\":{%s}}\n",
              res->size(), n, epochs, threads, ours_s, ours_runs_s[0], ours_runs_s[1], ours_runs_cpu[0],
              ours_runs_cpu[1], loop_s, py_s, loop_s / ours_s, py_s > 0 ? py_s / ours_s : 0.0,
              ours_cpu, loop_cpu, py_cpu, loop_cpu / ours_cpu, py_cpu > 0 ? py_cpu / ours_cpu : 0.0,
              Mean(ours_loss), Mean(loop_loss), py_loss, per_arch.c_str());
  return 0;
}
