// mlink-eval: reproduces the paper's experiments on real data.
//   mlink-eval [links]  the pairwise link performance matrix (Table 3 form) on the Fashion-MNIST
//                       model zoo -> results/links.md
//   mlink-eval adapt    oracle links under domain shift (Table 4 form) -> results/adapt.md
//   mlink-eval online --trace T   online training policies on a recorded trace (Fig. 6 form)
//   mlink-eval federate  cross-domain aggregation and fusion of oracle links (Fig. 8 form)
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "mlink/common/log.h"
#include "mlink/eval/adapt.h"
#include "mlink/eval/federate.h"
#include "mlink/eval/online.h"
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

struct LinksArgs {
  int link_rows = 3000;
  int test_rows = 2000;
  int epochs = 100;
  uint64_t seed = 1;
};

struct AdaptArgs {
  std::string cnn;  // empty: the cached CNN, trained on first use
  int seeds = 3;
  std::vector<double> shares = {0.01, 0.05, 0.10};
  int domain_rows = 10000;
  int epochs = 100;
  std::vector<std::string> shifts;  // empty: DefaultShifts()
};

void WriteReport(const std::string& out_dir, const std::string& name, const std::string& md) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  std::ofstream(out_dir + "/" + name) << md;
}

int RunLinks(const std::string& data_dir, const std::string& out_dir, const LinksArgs& args) {
  const int link_rows = args.link_rows, test_rows = args.test_rows, epochs = args.epochs;
  const uint64_t seed = args.seed;
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
  WriteReport(out_dir, "links.md", md.str());
  MLOG_INFO("eval", "done")
      .Kv("report", out_dir + "/links.md")
      .Kv("seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

// The given CNN, or the cached one (trained on first use, with progress lines).
mlink::Result<std::string> CnnPath(const std::string& data_dir, const std::string& given) {
  if (!given.empty()) return given;
  auto cnn_opts = mlink::eval::DefaultCnnOptions();
  cnn_opts.fmnist_dir = data_dir;
  if (!std::filesystem::exists(cnn_opts.path)) {
    MLOG_INFO("eval", "training the Fashion-MNIST CNN (once; a few minutes)").Kv("cache", cnn_opts.path);
  }
  cnn_opts.progress = [](const std::string& line) { MLOG_INFO("eval", "cnn").Kv("train", line); };
  return mlink::eval::EnsureFmnistCnn(cnn_opts);
}

struct OnlineArgs {
  std::vector<std::string> traces;
  std::string active = "fullbody,motion";
  double budget = 0.1;
  int retrain_samples = 10;
  int epochs = 20;
};

int RunOnline(const std::string& out_dir, const OnlineArgs& args) {
  mlink::eval::OnlineOptions o;
  o.traces = args.traces;
  std::stringstream ss(args.active);
  for (std::string m; std::getline(ss, m, ',');) o.active.push_back(m);
  o.budget = args.budget;
  o.retrain_samples = args.retrain_samples;
  o.epochs = args.epochs;
  MLOG_INFO("eval", "online training policies").Kv("traces", o.traces.size()).Kv("budget", o.budget);
  auto r = mlink::eval::RunOnlinePolicies(o);
  if (!r.ok()) {
    std::cerr << "mlink-eval: " << r.status().message() << "\n";
    return 1;
  }
  const std::string md = "## Online training policies (Fig. 6 form)\n\n" + mlink::eval::OnlineMarkdown(*r, o);
  std::fprintf(g_out, "%s", md.c_str());
  WriteReport(out_dir, "online.md", md);
  MLOG_INFO("eval", "done").Kv("report", out_dir + "/online.md");
  return 0;
}

struct FederateArgs {
  std::string cnn;
  int rounds = 15;
  int target_labels = 200;
  // A domain close to the contributing sites' (the global link alone goes far) and one farther
  // away (fusion with the site's own labels adds on top).
  std::vector<std::string> target_shifts = {"washout:0.45:20", "rotate:15"};
  std::string dp = "none";
  mlink::dp::PrivacyOptions privacy;
  double clip_norm = 0;
};

int RunFederate(const std::string& data_dir, const std::string& out_dir, const FederateArgs& args) {
  auto cnn = CnnPath(data_dir, args.cnn);
  if (!cnn.ok()) {
    std::cerr << "mlink-eval: " << cnn.status().message() << "\n";
    return 1;
  }
  if (args.dp != "none" && (args.privacy.clip_norm <= 0 || args.privacy.noise_multiplier <= 0)) {
    std::cerr << "mlink-eval: --dp " << args.dp << " needs --dp-clip and --dp-noise (both > 0)\n";
    return 2;
  }
  std::string md = "## Cross-domain aggregation and local-global fusion of oracle links (Fig. 8 form)\n\n";
  double seconds = 0;
  for (const auto& target_shift : args.target_shifts) {
    mlink::eval::FederateOptions o;
    o.cnn_path = *cnn;
    o.rounds = args.rounds;
    o.target_labels = args.target_labels;
    o.target_shift = target_shift;
    o.dp_mode = args.dp;
    o.privacy = args.privacy;
    o.clip_norm = args.clip_norm;
    MLOG_INFO("eval", "cross-domain aggregation and fusion").Kv("rounds", o.rounds).Kv("sites", o.site_shifts.size())
        .Kv("target", target_shift);
    auto r = mlink::eval::RunFederation(o);
    if (!r.ok()) {
      std::cerr << "mlink-eval: " << r.status().message() << "\n";
      return 1;
    }
    md += "### Target domain " + target_shift + "\n\n" + mlink::eval::FederateMarkdown(*r, o) + "\n";
    seconds += r->seconds;
  }
  std::fprintf(g_out, "%s", md.c_str());
  WriteReport(out_dir, "federate.md", md);
  MLOG_INFO("eval", "done").Kv("report", out_dir + "/federate.md").Kv("seconds", seconds);
  return 0;
}

int RunAdapt(const std::string& data_dir, const std::string& out_dir, const AdaptArgs& args) {
  auto t0 = std::chrono::steady_clock::now();
  mlink::eval::AdaptOptions opts;
  if (!args.shifts.empty()) {
    opts.shifts.clear();
    for (const auto& text : args.shifts) {
      auto shift = mlink::eval::ParseShift(text);
      if (!shift.ok()) {
        std::cerr << "mlink-eval: " << shift.status().message() << "\n";
        return 2;
      }
      opts.shifts.push_back(*shift);
    }
  }
  auto cnn_path_or = CnnPath(data_dir, args.cnn);
  if (!cnn_path_or.ok()) {
    std::cerr << "mlink-eval: " << cnn_path_or.status().message() << "\n";
    return 1;
  }
  const std::string cnn_path = *cnn_path_or;
  auto cnn = mlink::eval::ImageClassifier::Load(cnn_path);
  if (!cnn.ok()) {
    std::cerr << "mlink-eval: " << cnn.status().message() << "\n";
    return 2;
  }
  // The target domain is the test split: the CNN never saw these images.
  auto domain = mlink::eval::LoadFashionMnist(data_dir, false, args.domain_rows);
  if (!domain.ok()) {
    std::cerr << "mlink-eval: " << domain.status().message() << "\n";
    return 2;
  }
  opts.label_shares = args.shares;
  opts.seeds.clear();
  for (int s = 1; s <= args.seeds; ++s) opts.seeds.push_back(uint64_t(s));
  opts.train.epochs = args.epochs;
  opts.progress = [](const std::string& shift, double share, uint64_t seed, double acc) {
    MLOG_INFO("eval", "oracle link trained").Kv("shift", shift).Kv("labels", share).Kv("seed", seed).Kv("accuracy", acc);
  };
  MLOG_INFO("eval", "oracle-link experiment").Kv("cnn", cnn_path).Kv("images", domain->rows).Kv("seeds", args.seeds);
  auto report = mlink::eval::RunOracleAdaptation(**cnn, *domain, opts);
  if (!report.ok()) {
    std::cerr << "mlink-eval: " << report.status().message() << "\n";
    return 1;
  }
  const std::string md = mlink::eval::AdaptMarkdown(*report);
  std::fprintf(g_out, "%s", md.c_str());
  WriteReport(out_dir, "adapt.md", md);
  MLOG_INFO("eval", "done")
      .Kv("report", out_dir + "/adapt.md")
      .Kv("seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlink-eval: the paper's experiments on real data"};
  std::string data_dir = mlink::eval::DefaultFashionMnistDir();
  std::string out_dir = "results";
  app.add_option("--fmnist", data_dir, "Fashion-MNIST folder (idx .gz files)");
  app.add_option("--out", out_dir, "results folder (a Markdown report is written there)");
  app.require_subcommand(0, 1);

  // The Table 3 matrix stays the default: its options are accepted with or without "links".
  LinksArgs links;
  app.add_option("--link-rows", links.link_rows, "model outputs used to train links")->check(CLI::Range(100, 50000));
  app.add_option("--test-rows", links.test_rows, "test images links are evaluated on")->check(CLI::Range(100, 10000));
  app.add_option("--epochs", links.epochs, "link training epochs (paper: 100)")->check(CLI::Range(1, 1000));
  app.add_option("--seed", links.seed, "seed for models, links and splits");
  CLI::App* links_cmd = app.add_subcommand("links", "pairwise link matrix on the model zoo (Table 3 form; default)");
  links_cmd->fallthrough();

  AdaptArgs adapt;
  CLI::App* adapt_cmd = app.add_subcommand("adapt", "oracle links under domain shift (Table 4 form)");
  adapt_cmd->fallthrough();
  adapt_cmd->add_option("--cnn", adapt.cnn, "TorchScript CNN ([N,1,28,28] in [0,1] -> 10 probabilities); "
                                             "default: the cached one, trained on first use");
  adapt_cmd->add_option("--seeds", adapt.seeds, "seeds 1..N (splits, noise, link initialisation)")->check(CLI::Range(1, 20));
  adapt_cmd->add_option("--shares", adapt.shares, "labelled shares of the target domain")
      ->check(CLI::Range(0.001, 0.5))->delimiter(',');
  adapt_cmd->add_option("--domain-rows", adapt.domain_rows, "test images forming each target domain")
      ->check(CLI::Range(1000, 10000));
  adapt_cmd->add_option("--shifts", adapt.shifts, "shifts (default rotate:30,washout:0.4:20,invert,blur:2)")
      ->delimiter(',');
  adapt_cmd->add_option("--link-epochs", adapt.epochs, "oracle-link training epochs (paper: 100)")->check(CLI::Range(1, 1000));
  OnlineArgs online;
  CLI::App* online_cmd = app.add_subcommand("online", "online link training under active sampling on a trace (Fig. 6 form)");
  online_cmd->fallthrough();
  online_cmd->add_option("--trace", online.traces, "trace recorded by `mlink-edge record` (every model on every frame); "
                                                   "repeat to play several one after the other")
      ->required()->check(CLI::ExistingFile);
  online_cmd->add_option("--active", online.active, "models that run (comma-separated); the others are predicted");
  online_cmd->add_option("--budget", online.budget, "labeling budget: share of frames sampled")->check(CLI::Range(0.001, 1.0));
  online_cmd->add_option("--retrain-samples", online.retrain_samples, "new samples between re-trainings")->check(CLI::Range(1, 100000));
  online_cmd->add_option("--link-epochs", online.epochs, "epochs per re-training")->check(CLI::Range(1, 1000));

  FederateArgs federate;
  CLI::App* federate_cmd = app.add_subcommand("federate", "cross-domain aggregation and fusion of oracle links (Fig. 8 form)");
  federate_cmd->fallthrough();
  federate_cmd->add_option("--cnn", federate.cnn, "TorchScript CNN; default: the cached one, trained on first use");
  federate_cmd->add_option("--rounds", federate.rounds, "rounds of Algorithm 1")->check(CLI::Range(1, 1000));
  federate_cmd->add_option("--target-shifts", federate.target_shifts, "the target site's domains, one run each")->delimiter(',');
  federate_cmd->add_option("--target-labels", federate.target_labels, "labels the target site holds")->check(CLI::Range(20, 1900));
  federate_cmd->add_option("--dp", federate.dp, "differential privacy: none, local (sites noise their uploads), central (aggregator noises the sum)")
      ->check(CLI::IsMember({"none", "local", "central"}));
  federate_cmd->add_option("--dp-clip", federate.privacy.clip_norm, "L2 bound of one update")->check(CLI::Range(1e-9, 1e9));
  federate_cmd->add_option("--dp-noise", federate.privacy.noise_multiplier, "noise std / clip bound")->check(CLI::Range(1e-9, 1e6));
  federate_cmd->add_option("--dp-delta", federate.privacy.delta, "the delta epsilon is reported at")->check(CLI::Range(1e-12, 0.5));
  federate_cmd->add_option("--dp-seed", federate.privacy.seed, "noise seed (0 = random)");
  federate_cmd->add_option("--clip-norm", federate.clip_norm, "the aggregator clips every update to this L2 norm (no noise)")
      ->check(CLI::Range(0.0, 1e9));
  CLI11_PARSE(app, argc, argv);

  if (adapt_cmd->parsed()) return RunAdapt(data_dir, out_dir, adapt);
  if (online_cmd->parsed()) return RunOnline(out_dir, online);
  if (federate_cmd->parsed()) return RunFederate(data_dir, out_dir, federate);
  return RunLinks(data_dir, out_dir, links);
}
