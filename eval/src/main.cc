// mlink-eval: reproduces the paper's experiments on real data.
//   mlink-eval [links]  the pairwise link performance matrix (Table 3 form) on the Fashion-MNIST
//                       model zoo -> results/links.md
//   mlink-eval adapt    oracle links under domain shift (Table 4 form) -> results/adapt.md
//   mlink-eval online --trace T   online training policies on a recorded trace (Fig. 6 form)
//   mlink-eval federate  cross-domain aggregation and fusion of oracle links (Fig. 8 form)
//   mlink-eval table5 --trace T   scheduling vs Standalone at several budgets (Table 5 form)
//   mlink-eval sched-sim   the scheduling simulation on random problems (Fig. 10 form)
//   mlink-eval report      every experiment above -> results/report.md with PNG plots
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
#include "mlink/eval/links_matrix.h"
#include "mlink/eval/report.h"
#include "mlink/eval/schedule.h"
#include "mlink/edge/scheduler_sim.h"

namespace {

FILE* g_out = stdout;

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

int RunLinks(const std::string& data_dir, const std::string& out_dir, mlink::eval::LinksMatrixOptions o) {
  auto t0 = std::chrono::steady_clock::now();
  o.fmnist_dir = data_dir;
  auto m = mlink::eval::RunLinksMatrix(o);
  if (!m.ok()) {
    std::cerr << "mlink-eval: " << m.status().message() << "\n";
    return m.status().code() == mlink::StatusCode::kInvalidArgument ? 2 : 1;
  }
  const std::string md = "## Pairwise link performance on Fashion-MNIST (Table 3 form)\n\n" + mlink::eval::LinksMarkdown(*m);
  std::fprintf(g_out, "%s", md.c_str());
  WriteReport(out_dir, "links.md", md);
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

struct Table5Args {
  std::vector<std::string> traces;
  std::vector<double> fractions = {0.2, 0.4, 0.6, 0.8};
  double train_share = 0.1;
  int epochs = 100;
};

int RunTable5(const std::string& out_dir, const Table5Args& args) {
  std::vector<mlink::eval::ScheduleEvalResult> results;
  for (const auto& trace : args.traces) {
    mlink::eval::ScheduleEvalOptions o;
    o.trace = trace;
    o.budget_fractions = args.fractions;
    o.train_share = args.train_share;
    o.epochs = args.epochs;
    auto r = mlink::eval::RunScheduleEval(o);
    if (!r.ok()) {
      std::cerr << "mlink-eval: " << r.status().ToString() << "\n";
      return 1;
    }
    results.push_back(std::move(r).value());
  }
  const std::string md = "## Scheduling vs Standalone at several budgets (Table 5 form)\n\n" + mlink::eval::ScheduleMarkdown(results);
  std::fprintf(g_out, "%s", md.c_str());
  WriteReport(out_dir, "table5.md", md);
  MLOG_INFO("eval", "done").Kv("report", out_dir + "/table5.md");
  return 0;
}

struct SimArgs {
  int instances = 1000;
  int models = 10;
  uint32_t seed = 1;
};

int RunSim(const std::string& out_dir, const SimArgs& args) {
  std::ostringstream md;
  md << "## Scheduling simulation (Fig. 10 form)\n\n" << args.models << " models, ensemble gain 0.02, " << args.instances
     << " random problems per distribution, budgets 10%..60% of the total cost. Mean output accuracy F (mean ratio to "
        "the optimum):\n\n| distribution | budget | trials | optimum | marginal gain | paper's rule | standalone |\n"
        "|---|---|---|---|---|---|---|\n";
  char buf[128];
  for (auto dist : {mlink::edge::SimDistribution::kNormal, mlink::edge::SimDistribution::kBeta}) {
    mlink::edge::SchedulingSimOptions o;
    o.models = args.models;
    o.dist = dist;
    o.instances = args.instances;
    o.seed = args.seed + (dist == mlink::edge::SimDistribution::kBeta ? 1 : 0);
    auto r = mlink::edge::RunSchedulingSimulation(o);
    if (!r.ok()) {
      std::cerr << "mlink-eval: " << r.status().ToString() << "\n";
      return 1;
    }
    for (std::size_t b = 0; b < o.budget_fractions.size(); ++b) {
      md << "| " << mlink::edge::SimDistributionName(dist) << " | " << 100 * o.budget_fractions[b] << "% | " << r->trials[b] << " |";
      for (const auto& rule : r->rules) {
        std::snprintf(buf, sizeof(buf), " %.3f (%.3f) |", rule.mean_objective[b], rule.mean_ratio[b]);
        md << buf;
      }
      md << "\n";
    }
    md << "| " << mlink::edge::SimDistributionName(dist) << " | all | " << r->total_trials << " |";
    for (const auto& rule : r->rules) {
      std::snprintf(buf, sizeof(buf), " ratio %.4f, worst %.3f |", rule.overall_mean_ratio, rule.worst_ratio);
      md << buf;
    }
    md << "\n";
  }
  std::fprintf(g_out, "%s", md.str().c_str());
  WriteReport(out_dir, "sched-sim.md", md.str());
  MLOG_INFO("eval", "done").Kv("report", out_dir + "/sched-sim.md");
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
  mlink::eval::LinksMatrixOptions links;  // the CLI's defaults are the options' own
  app.add_option("--link-rows", links.link_rows, "model outputs used to train links")->check(CLI::Range(100, 50000));
  app.add_option("--test-rows", links.test_rows, "test images links are evaluated on")->check(CLI::Range(100, 10000));
  app.add_option("--epochs", links.epochs, "link training epochs (paper: 100)")->check(CLI::Range(1, 1000));
  app.add_option("--seed", links.seed, "seed for models, links and splits");
  app.add_option("--threads", links.threads, "link training threads (0 = one per core; same results for any count)")
      ->check(CLI::Range(0, 1024));
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

  Table5Args table5;
  CLI::App* table5_cmd = app.add_subcommand("table5", "scheduling vs Standalone at several budgets on recorded traces (Table 5 form)");
  table5_cmd->fallthrough();
  table5_cmd->add_option("--trace", table5.traces, "trace recorded by `mlink-edge record`; repeat for one table each")
      ->required()->check(CLI::ExistingFile);
  table5_cmd->add_option("--budgets", table5.fractions, "budgets as shares of the all-models cost")
      ->check(CLI::Range(0.001, 1.0))->delimiter(',');
  table5_cmd->add_option("--train-share", table5.train_share, "first share of frames that trains and profiles the links")
      ->check(CLI::Range(0.01, 0.9));
  table5_cmd->add_option("--link-epochs", table5.epochs, "link training epochs")->check(CLI::Range(1, 1000));

  SimArgs sim;
  CLI::App* sim_cmd = app.add_subcommand("sched-sim", "the scheduling simulation on random problems (Fig. 10 form)");
  sim_cmd->fallthrough();
  sim_cmd->add_option("--instances", sim.instances, "random problems per distribution")->check(CLI::Range(1, 1000000));
  sim_cmd->add_option("--models", sim.models, "models per problem (the exact solver allows 20)")->check(CLI::Range(1, 20));
  sim_cmd->add_option("--sim-seed", sim.seed, "seed of the draws");

  mlink::eval::ReportOptions report;
  std::string only;
  CLI::App* report_cmd = app.add_subcommand("report", "every experiment -> OUT/report.md with PNG plots (gnuplot)");
  report_cmd->fallthrough();
  report_cmd->add_option("--only", only, "comma-separated subset: links,adapt,federate,online,table5,sched-sim");
  report_cmd->add_option("--trace-dir", report.trace_dir, "where recorded traces are cached (default OUT/traces)");
  report_cmd->add_option("--cnn", report.cnn_path, "TorchScript CNN for adapt/federate; default: the cached one");
  report_cmd->add_option("--zoo-rows", report.links.model_rows, "training images for the zoo's models (Table 3)")
      ->check(CLI::Range(100, 50000));
  report_cmd->add_option("--adapt-seeds", report.adapt_seeds, "Table 4 seeds")->check(CLI::Range(1, 20));
  report_cmd->add_option("--adapt-shares", report.adapt_shares, "Table 4 labelled shares")
      ->check(CLI::Range(0.001, 0.5))->delimiter(',');
  report_cmd->add_option("--adapt-shifts", report.adapt_shifts, "Table 4 shifts")->delimiter(',');
  report_cmd->add_option("--domain-rows", report.adapt_domain_rows, "Table 4 target-domain images")->check(CLI::Range(1000, 10000));
  report_cmd->add_option("--adapt-epochs", report.adapt_epochs, "Table 4 oracle-link epochs")->check(CLI::Range(1, 1000));
  report_cmd->add_option("--rounds", report.federate_rounds, "Fig. 8 rounds of Algorithm 1")->check(CLI::Range(1, 1000));
  report_cmd->add_option("--federate-targets", report.federate_targets, "Fig. 8 target domains")->delimiter(',');
  report_cmd->add_option("--site-images", report.federate_site_images, "Fig. 8 images per contributing site")
      ->check(CLI::Range(100, 2500));
  report_cmd->add_option("--target-images", report.federate_target_images, "Fig. 8 target-site images")
      ->check(CLI::Range(100, 2500));
  report_cmd->add_option("--target-labels", report.federate_target_labels, "Fig. 8 target-site labels")
      ->check(CLI::Range(20, 1900));
  report_cmd->add_option("--vtest-frames", report.vtest_frames, "frames of vtest.avi to record (0 = all)")->check(CLI::Range(0, 100000));
  report_cmd->add_option("--megamind-frames", report.megamind_frames, "frames of Megamind.avi to record (0 = all)")
      ->check(CLI::Range(0, 100000));
  report_cmd->add_option("--vtest-config", report.vtest_config, "site config recording vtest.avi (default configs/edge-site-a.yaml)");
  report_cmd->add_option("--megamind-config", report.megamind_config, "site config recording Megamind.avi (default configs/edge-site-c.yaml)");
  report_cmd->add_option("--online-init-frames", report.online.init_frames, "Fig. 6 frames that train the first links")
      ->check(CLI::Range(10, 100000));
  report_cmd->add_option("--online-segment-frames", report.online.segment_frames, "Fig. 6 frames per segment")
      ->check(CLI::Range(5, 100000));
  report_cmd->add_option("--online-epochs", report.online.epochs, "Fig. 6 epochs per re-training")->check(CLI::Range(1, 1000));
  report_cmd->add_option("--budgets", report.schedule.budget_fractions, "Table 5 budgets as shares of the all-models cost")
      ->check(CLI::Range(0.001, 1.0))->delimiter(',');
  report_cmd->add_option("--train-share", report.schedule.train_share, "Table 5 share of frames that trains the links")
      ->check(CLI::Range(0.01, 0.9));
  report_cmd->add_option("--schedule-epochs", report.schedule.epochs, "Table 5 link epochs")->check(CLI::Range(1, 1000));
  report_cmd->add_option("--sim-instances", report.sim_instances, "Fig. 10 random problems per distribution")
      ->check(CLI::Range(1, 1000000));
  CLI11_PARSE(app, argc, argv);

  if (adapt_cmd->parsed()) return RunAdapt(data_dir, out_dir, adapt);
  if (online_cmd->parsed()) return RunOnline(out_dir, online);
  if (federate_cmd->parsed()) return RunFederate(data_dir, out_dir, federate);
  if (table5_cmd->parsed()) return RunTable5(out_dir, table5);
  if (sim_cmd->parsed()) return RunSim(out_dir, sim);
  if (report_cmd->parsed()) {
    report.out_dir = out_dir;
    report.fmnist_dir = data_dir;
    // The Table 3 options apply when given; otherwise the report's lighter defaults.
    if (app.get_option("--link-rows")->count() > 0) report.links.link_rows = links.link_rows;
    if (app.get_option("--test-rows")->count() > 0) report.links.test_rows = links.test_rows;
    if (app.get_option("--epochs")->count() > 0) report.links.epochs = links.epochs;
    report.links.seed = links.seed;
    report.links.threads = links.threads;
    std::stringstream ss(only);
    for (std::string name; std::getline(ss, name, ',');) {
      if (!name.empty()) report.only.push_back(name);
    }
    auto run = mlink::eval::RunReport(report);
    if (!run.summary.report_path.empty()) {
      std::printf("report: %s (%zu plots, %.0f s)\n", run.summary.report_path.c_str(), run.summary.pngs.size(),
                  run.summary.seconds);
    }
    if (!run.status.ok()) {
      std::cerr << "mlink-eval: " << run.status.ToString() << "\n";
      return run.status.code() == mlink::StatusCode::kInvalidArgument ? 2 : 1;
    }
    return 0;
  }
  return RunLinks(data_dir, out_dir, links);
}
