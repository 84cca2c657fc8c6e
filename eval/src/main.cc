// mlink-eval: reproduces the paper's experiments on real data. This build has the pairwise link
// performance matrix (Table 3 form) on the Fashion-MNIST model zoo.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "mlink/common/log.h"
#include "mlink/eval/fmnist.h"
#include "mlink/link/batched.h"

namespace {

FILE* g_out = stdout;

mlink::eval::FashionMnist Slice(const mlink::eval::FashionMnist& d, int start, int count) {
  mlink::eval::FashionMnist s;
  s.rows = count;
  s.pixels.assign(d.pixels.begin() + std::size_t(start) * 784, d.pixels.begin() + std::size_t(start + count) * 784);
  s.labels.assign(d.labels.begin() + start, d.labels.begin() + start + count);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlink-eval: the paper's experiments on recorded data"};
  std::string data_dir = mlink::eval::DefaultFashionMnistDir();
  std::string out_dir = "results";
  int link_rows = 3000, test_rows = 2000, epochs = 100;
  uint64_t seed = 1;
  app.add_option("--fmnist", data_dir, "Fashion-MNIST folder (idx .gz files)");
  app.add_option("--out", out_dir, "results folder (a Markdown report is written there)");
  app.add_option("--link-rows", link_rows, "model outputs used to train links")->check(CLI::Range(100, 50000));
  app.add_option("--test-rows", test_rows, "test images links are evaluated on")->check(CLI::Range(100, 10000));
  app.add_option("--epochs", epochs, "link training epochs (paper: 100)")->check(CLI::Range(1, 1000));
  app.add_option("--seed", seed, "seed for models, links and splits");
  CLI11_PARSE(app, argc, argv);

  auto t0 = std::chrono::steady_clock::now();
  auto train = mlink::eval::LoadFashionMnist(data_dir, true);
  auto test = mlink::eval::LoadFashionMnist(data_dir, false, test_rows);
  if (!train.ok() || !test.ok()) {
    std::cerr << "mlink-eval: " << (train.ok() ? test.status() : train.status()).message() << "\n";
    return 2;
  }
  const int model_rows = 10000;
  if (model_rows + link_rows > train->rows) {
    std::cerr << "mlink-eval: --link-rows too large for the training split\n";
    return 2;
  }
  MLOG_INFO("eval", "training the model zoo").Kv("images", model_rows);
  auto zoo = mlink::eval::TrainZoo(Slice(*train, 0, model_rows), seed);
  if (!zoo.ok()) {
    std::cerr << "mlink-eval: " << zoo.status().message() << "\n";
    return 1;
  }
  auto link_outputs = zoo->Run(Slice(*train, model_rows, link_rows));
  auto test_outputs = zoo->Run(*test);

  std::vector<mlink::link::ModelOutputSpec> specs;
  for (const auto& m : zoo->models) specs.push_back(m.spec);
  mlink::link::PairwiseOptions opts;
  opts.train.epochs = epochs;
  opts.train.seed = seed;
  opts.progress = [](const std::string& arch, int links, int epoch, int epochs, double loss) {
    if (epoch == 1 || epoch % 10 == 0 || epoch == epochs) {
      MLOG_INFO("eval", "training links").Kv("arch", arch).Kv("links", links).Kv("epoch", epoch).Kv("of", epochs).Kv("loss", loss);
    }
  };
  const std::size_t k = specs.size();
  MLOG_INFO("eval", "training pairwise links").Kv("links", k * (k - 1)).Kv("rows", link_rows).Kv("epochs", epochs);
  auto t1 = std::chrono::steady_clock::now();
  auto links = mlink::link::TrainPairwise(specs, link_outputs, opts);
  if (!links.ok()) {
    std::cerr << "mlink-eval: " << links.status().message() << "\n";
    return 1;
  }
  double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();

  // Table 3 form: rows are targets, columns sources; each cell is the link's metric on test images.
  std::vector<std::vector<std::string>> cell(k, std::vector<std::string>(k, "-"));
  for (const auto& r : *links) {
    auto ev = r.link->Evaluate(test_outputs[r.source], test_outputs[r.target]);
    if (!ev.ok()) {
      std::cerr << "mlink-eval: " << ev.status().message() << "\n";
      return 1;
    }
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.3f", ev->metric);
    cell[r.target][r.source] = buf;
  }
  std::ostringstream md;
  md << "## Pairwise link performance on Fashion-MNIST (Table 3 form)\n\n"
     << "Rows: target model (metric); columns: source model. " << link_rows << " training rows, "
     << test.value().rows << " test images, " << epochs << " epochs max, RMSprop lr 0.01, batch 32.\n\n| target \\ source |";
  for (const auto& m : zoo->models) md << " " << m.name << " |";
  md << "\n|---|";
  for (std::size_t i = 0; i < k; ++i) md << "---|";
  md << "\n";
  const char* metric_names[] = {"accuracy", "accuracy", "mAP", "1-MAE/MAD: MAE", "IoU", "WER", "WER"};
  for (std::size_t j = 0; j < k; ++j) {
    md << "| " << zoo->models[j].name << " (" << metric_names[j] << ") |";
    for (std::size_t i = 0; i < k; ++i) md << " " << cell[j][i] << " |";
    md << "\n";
  }
  md << "\nAll " << k * (k - 1) << " links trained as stacked groups in " << train_s << " s.\n";
  std::fprintf(g_out, "%s", md.str().c_str());

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  std::ofstream(out_dir + "/links.md") << md.str();
  MLOG_INFO("eval", "done")
      .Kv("report", out_dir + "/links.md")
      .Kv("seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}
