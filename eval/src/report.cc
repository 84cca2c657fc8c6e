#include "mlink/eval/report.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "mlink/common/log.h"
#include "mlink/edge/options.h"
#include "mlink/edge/record.h"
#include "mlink/edge/trace.h"
#include "mlink/eval/adapt.h"
#include "mlink/eval/federate.h"
#include "mlink/eval/plot.h"

#ifndef MLINK_SOURCE_DIR
#error "MLINK_SOURCE_DIR must name the source tree (eval/CMakeLists.txt sets it)"
#endif

namespace mlink::eval {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

std::string Basename(const std::string& path) { return path.substr(path.find_last_of('/') + 1); }

// Collects sections and plots; each experiment adds its Markdown and PNG names.
class Report {
 public:
  explicit Report(const ReportOptions& o) : o_(o) {}

  bool Wants(const std::string& name) const {
    return o_.only.empty() || std::find(o_.only.begin(), o_.only.end(), name) != o_.only.end();
  }

  // Runs one experiment; its failure becomes the section's text and the run's status.
  void Section(const std::string& name, const std::string& title,
               const std::function<Status(std::string*)>& body) {
    if (!Wants(name)) return;
    MLOG_INFO("eval", "report: section started").Kv("section", name);
    const auto start = Clock::now();
    std::string md;
    Status st = body(&md);
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    md_ << "## " << title << "\n\n";
    if (st.ok()) {
      md_ << md << "\n_Run time: " << Fmt("%.0f", s) << " s._\n\n";
      summary_.sections.push_back(name);
      MLOG_INFO("eval", "report: section done").Kv("section", name).Kv("seconds", s);
    } else {
      md_ << "**Failed:** " << st.ToString() << "\n\n";
      MLOG_ERROR("eval", "report: section failed").Kv("section", name).Kv("error", st.ToString());
      if (status_.ok()) status_ = st.WithContext("report section " + name);
    }
  }

  // Draws a plot into out_dir and returns the Markdown image line.
  Result<std::string> Plot(const std::string& file, const std::string& alt,
                           const std::function<Status(const std::string&)>& draw) {
    MLINK_RETURN_IF_ERROR(draw(o_.out_dir + "/" + file));
    summary_.pngs.push_back(file);
    return "![" + alt + "](" + file + ")\n\n";
  }

  std::string Markdown() const { return md_.str(); }
  ReportSummary& summary() { return summary_; }
  const Status& status() const { return status_; }

 private:
  const ReportOptions& o_;
  std::ostringstream md_;
  ReportSummary summary_;
  Status status_;
};

// ---- Table 3 ------------------------------------------------------------------------------------

Status LinksSection(const ReportOptions& o, Report* report, std::string* md) {
  LinksMatrixOptions lo = o.links;
  if (lo.fmnist_dir.empty()) lo.fmnist_dir = o.fmnist_dir;
  MLINK_ASSIGN_OR_RETURN(auto m, RunLinksMatrix(lo));
  *md += LinksMarkdown(m) + "\n";
  Heatmap h;
  h.title = "Link performance p (target row from source column; captions: 1 - WER)";
  h.xlabel = "source model";
  h.ylabel = "target model";
  h.cols = m.models;
  for (std::size_t j = 0; j < m.models.size(); ++j) {
    h.rows.push_back(m.models[j] + " (" + (m.higher_is_better[j] ? m.metrics[j] : "1 - WER") + ")");
    std::vector<double> row = m.value[j];
    if (!m.higher_is_better[j]) {
      for (double& v : row) v = std::isnan(v) ? v : 1 - v;
    }
    h.values.push_back(row);
  }
  h.vmin = 0;
  h.vmax = 1;
  MLINK_ASSIGN_OR_RETURN(auto img,
                         report->Plot("links.png", "Table 3 heatmap",
                                      [&](const std::string& p) { return PlotHeatmap(h, p); }));
  *md += img;
  *md +=
      "Paper (Table 3, its own seven models): links are asymmetric, some sources dominate a target "
      "(e.g. Caption -> Action mAP 29.7% vs 8.5-12.8% from the others) and an ensemble is at least "
      "as good as "
      "its best source.\n";
  return Status::Ok();
}

// ---- Table 4 ------------------------------------------------------------------------------------

Result<std::string> Cnn(const ReportOptions& o) {
  if (!o.cnn_path.empty()) return o.cnn_path;
  auto cnn_opts = DefaultCnnOptions();
  if (!o.fmnist_dir.empty()) cnn_opts.fmnist_dir = o.fmnist_dir;
  if (!fs::exists(cnn_opts.path)) {
    MLOG_INFO("eval", "training the Fashion-MNIST CNN (once; a few minutes)")
        .Kv("cache", cnn_opts.path);
  }
  cnn_opts.progress = [](const std::string& line) { MLOG_INFO("eval", "cnn").Kv("train", line); };
  return EnsureFmnistCnn(cnn_opts);
}

Status AdaptSection(const ReportOptions& o, Report* report, std::string* md) {
  AdaptOptions ao;
  ao.shifts.clear();
  for (const auto& text : o.adapt_shifts) {
    MLINK_ASSIGN_OR_RETURN(auto shift, ParseShift(text));
    ao.shifts.push_back(shift);
  }
  ao.label_shares = o.adapt_shares;
  ao.seeds.clear();
  for (int s = 1; s <= o.adapt_seeds; ++s) ao.seeds.push_back(uint64_t(s));
  ao.train.epochs = o.adapt_epochs;
  ao.progress = [](const std::string& shift, double share, uint64_t seed, double acc) {
    MLOG_INFO("eval", "oracle link trained")
        .Kv("shift", shift)
        .Kv("labels", share)
        .Kv("seed", seed)
        .Kv("accuracy", acc);
  };
  MLINK_ASSIGN_OR_RETURN(auto cnn_path, Cnn(o));
  MLINK_ASSIGN_OR_RETURN(auto cnn, ImageClassifier::Load(cnn_path));
  MLINK_ASSIGN_OR_RETURN(
      auto domain, LoadFashionMnist(o.fmnist_dir.empty() ? DefaultFashionMnistDir() : o.fmnist_dir,
                                    false, o.adapt_domain_rows));
  MLINK_ASSIGN_OR_RETURN(auto r, RunOracleAdaptation(*cnn, domain, ao));
  std::string table = AdaptMarkdown(r);
  if (table.rfind("## ", 0) == 0)
    table.erase(0, table.find('\n') + 1);  // the report has its own heading
  *md += table + "\n";
  BarPlot b;
  b.title = "Oracle links under domain shift (Table 4 form): CNN accuracy";
  b.ylabel = "accuracy (%)";
  b.ymin = 0;
  b.ymax = 100;
  for (const auto& c : r.columns) b.categories.push_back(c.shift.name);
  b.categories.push_back("Avg.");
  auto add = [&](const std::string& title, const std::function<double(const AdaptColumn&)>& get) {
    PlotSeries s;
    s.title = title;
    double sum = 0;
    for (const auto& c : r.columns) {
      s.y.push_back(100 * get(c));
      sum += s.y.back();
    }
    s.y.push_back(r.columns.empty() ? 0 : sum / static_cast<double>(r.columns.size()));
    b.series.push_back(s);
  };
  add("Source (unshifted)", [](const AdaptColumn& c) { return c.source.mean; });
  add("Shift", [](const AdaptColumn& c) { return c.shifted.mean; });
  for (std::size_t i = 0; i < r.label_shares.size(); ++i) {
    add("oracle link, " + Fmt("%g", 100 * r.label_shares[i]) + "% labels",
        [i](const AdaptColumn& c) { return i < c.oracle.size() ? c.oracle[i].mean : 0.0; });
  }
  MLINK_ASSIGN_OR_RETURN(auto img,
                         report->Plot("adapt.png", "Table 4 bars",
                                      [&](const std::string& p) { return PlotBars(b, p); }));
  *md += img;
  *md +=
      "Paper (Table 4, Office-Home, ResNet50 as the black box): Source 92.3, Shift 59.5, MLink "
      "with 10% of the "
      "target domain's labels 72.6 on average (about 40% of the loss won back).\n";
  return Status::Ok();
}

// ---- Fig. 8 -------------------------------------------------------------------------------------

Status FederateSection(const ReportOptions& o, Report* report, std::string* md) {
  MLINK_ASSIGN_OR_RETURN(auto cnn_path, Cnn(o));
  LinePlot plot;
  plot.title = "Global oracle link on a target site that contributes no samples (Fig. 8 form)";
  plot.xlabel = "round of Algorithm 1";
  plot.ylabel = "accuracy on the target site (%)";
  plot.ymin = 0;
  plot.ymax = 100;
  for (const auto& target : o.federate_targets) {
    FederateOptions fo;
    fo.cnn_path = cnn_path;
    fo.rounds = o.federate_rounds;
    fo.site_images = o.federate_site_images;
    fo.target_images = o.federate_target_images;
    fo.target_labels = o.federate_target_labels;
    fo.target_shift = target;
    MLOG_INFO("eval", "cross-domain aggregation and fusion")
        .Kv("rounds", fo.rounds)
        .Kv("target", target);
    MLINK_ASSIGN_OR_RETURN(auto r, RunFederation(fo));
    *md += "### Target domain " + target + "\n\n" + FederateMarkdown(r, fo) + "\n";
    PlotSeries global, local, fused;
    global.title = target + ": global link";
    local.title = target + ": local link (own labels)";
    fused.title = target + ": fused local + global";
    for (std::size_t i = 0; i < r.global_by_round.size(); ++i) {
      const double x = static_cast<double>(i);
      global.x.push_back(x);
      global.y.push_back(r.global_by_round[i] < 0 ? NAN : 100 * r.global_by_round[i]);
      local.x.push_back(x);
      local.y.push_back(100 * r.local);
      fused.x.push_back(x);
      fused.y.push_back(100 * r.fused);
    }
    plot.series.push_back(global);
    plot.series.push_back(local);
    plot.series.push_back(fused);
  }
  MLINK_ASSIGN_OR_RETURN(auto img,
                         report->Plot("federate.png", "Fig. 8 accuracy over rounds",
                                      [&](const std::string& p) { return PlotLines(plot, p); }));
  *md += img;
  *md +=
      "Paper (Fig. 8, smart building, action classifier): the global link from two other domains "
      "lifts the "
      "target from 77.8% to 90.2% without any target sample; local-global fusion adds up to 6%.\n";
  return Status::Ok();
}

// ---- traces -------------------------------------------------------------------------------------

std::string TracePath(const ReportOptions& o, const std::string& name, int frames) {
  const std::string dir = o.trace_dir.empty() ? o.out_dir + "/traces" : o.trace_dir;
  return dir + "/" + name + "-" + (frames > 0 ? std::to_string(frames) : std::string("all")) +
         ".db";
}

std::string Config(const std::string& given, const char* site) {
  return given.empty() ? std::string(MLINK_SOURCE_DIR) + "/configs/edge-site-" + site + ".yaml"
                       : given;
}

// The traces the video experiments need, recorded on first use.
Result<std::vector<std::string>> Traces(const ReportOptions& o) {
  const std::string vtest = TracePath(o, "vtest", o.vtest_frames);
  const std::string megamind = TracePath(o, "megamind", o.megamind_frames);
  MLINK_RETURN_IF_ERROR(EnsureTrace(Config(o.vtest_config, "a"), vtest, o.vtest_frames));
  MLINK_RETURN_IF_ERROR(EnsureTrace(Config(o.megamind_config, "c"), megamind, o.megamind_frames));
  return std::vector<std::string>{vtest, megamind};
}

// ---- Fig. 6 -------------------------------------------------------------------------------------

Status OnlineSection(const ReportOptions& o, Report* report, std::string* md) {
  MLINK_ASSIGN_OR_RETURN(auto traces, Traces(o));
  OnlineOptions oo = o.online;
  oo.traces = traces;
  MLINK_ASSIGN_OR_RETURN(auto first, edge::Trace::Open(traces[0]));
  const int64_t boundary = first->FrameCount();
  MLOG_INFO("eval", "online training policies")
      .Kv("traces", oo.traces.size())
      .Kv("budget", oo.budget);
  MLINK_ASSIGN_OR_RETURN(auto r, RunOnlinePolicies(oo));
  *md += OnlineMarkdown(r, oo) + "\n";
  *md += "The scene changes at frame " + std::to_string(boundary) + " (" + Basename(traces[0]) +
         " ends, " + Basename(traces[1]) + " begins).\n\n";
  LinePlot plot;
  plot.title = "Online training policies (Fig. 6 form): mean p of the predicted models per segment";
  plot.xlabel = "frame (segment midpoint)";
  plot.ylabel = "mean performance p";
  plot.ymin = 0;
  plot.ymax = 1;
  plot.vlines = {static_cast<double>(boundary)};
  for (const auto& p : r.policies) {
    PlotSeries s;
    s.title = p.name;
    for (std::size_t g = 0; g < r.segments.size() && g < p.segment_p.size(); ++g) {
      s.x.push_back(0.5 * static_cast<double>(r.segments[g].first + r.segments[g].second));
      s.y.push_back(p.segment_p[g]);
    }
    plot.series.push_back(s);
  }
  MLINK_ASSIGN_OR_RETURN(auto img,
                         report->Plot("online.png", "Fig. 6 accuracy over time",
                                      [&](const std::string& p) { return PlotLines(plot, p); }));
  *md += img;
  *md +=
      "Paper (Fig. 6, vehicle -> person counting link on traffic video, 1% labels): offline 6.3%, "
      "periodic "
      "70.2%, uncertainty 73.5%, loss prediction 74.7% average accuracy.\n";
  return Status::Ok();
}

// ---- Table 5 ------------------------------------------------------------------------------------

Status ScheduleSection(const ReportOptions& o, Report* report, std::string* md) {
  MLINK_ASSIGN_OR_RETURN(auto traces, Traces(o));
  std::vector<ScheduleEvalResult> results;
  for (const auto& trace : traces) {
    ScheduleEvalOptions so = o.schedule;
    so.trace = trace;
    MLINK_ASSIGN_OR_RETURN(auto r, RunScheduleEval(so));
    results.push_back(std::move(r));
  }
  *md +=
      "Costs are the models' mean latencies on this machine; accuracy is each model's output "
      "accuracy against "
      "running it (count accuracy |error| < 0.5, 1 - MAE/MAD for the motion share), averaged over "
      "all models "
      "(1.0 = every model run).\n\n";
  *md += ScheduleMarkdown(results);
  for (const auto& r : results) {
    std::string name = Basename(r.trace);
    name = name.substr(0, name.find('-'));
    LinePlot plot;
    plot.title = "Scheduling vs Standalone on " + name + " (Table 5 form)";
    plot.xlabel = "budget (% of the all-models cost)";
    plot.ylabel = "mean output accuracy";
    plot.ymin = 0;
    plot.ymax = 1.05;
    const char* titles[] = {"Standalone", "MLink, paper's rule", "MLink, marginal gain (default)",
                            "hindsight best set"};
    for (std::size_t i = 0; i < 4; ++i) {
      PlotSeries s;
      s.title = titles[i];
      for (const auto& row : r.rows) {
        s.x.push_back(100 * row.fraction);
        s.y.push_back(row.rules[i].accuracy);
      }
      plot.series.push_back(s);
    }
    MLINK_ASSIGN_OR_RETURN(auto img,
                           report->Plot("table5-" + name + ".png", "Table 5 " + name,
                                        [&](const std::string& p) { return PlotLines(plot, p); }));
    *md += img;
  }
  *md +=
      "Paper (Table 5, three models per system under 5/9 GB GPU memory): Standalone 33.3/66.7%, "
      "MLink "
      "94.1/97.9% (building) and 94/97.4% (city).\n";
  return Status::Ok();
}

// ---- Fig. 10 ------------------------------------------------------------------------------------

Status SimSection(const ReportOptions& o, Report* report, std::string* md) {
  const char* titles[] = {"optimum", "MLink, marginal gain (default)", "MLink, paper's rule",
                          "Standalone"};
  Histogram hist;
  hist.title = "Objective / optimum per trial (Fig. 10 simulation)";
  hist.xlabel = "ratio to the optimum";
  hist.lo = 0.0;
  hist.hi = 1.0;
  hist.bins = 50;
  *md += "Random problems of " + std::to_string(o.sim_models) +
         " models (link performances and costs drawn from the "
         "distribution, costs clipped to [0.05, 1]), ensemble gain 0.02, " +
         std::to_string(o.sim_instances) +
         " problems per distribution, each at every budget; the optimum by branch and bound. Mean "
         "output accuracy "
         "F (and mean ratio to the optimum):\n\n";
  for (auto dist : {edge::SimDistribution::kNormal, edge::SimDistribution::kBeta}) {
    edge::SchedulingSimOptions so;
    so.models = o.sim_models;
    so.dist = dist;
    so.instances = o.sim_instances;
    so.seed = dist == edge::SimDistribution::kBeta ? 2 : 1;
    MLINK_ASSIGN_OR_RETURN(auto r, edge::RunSchedulingSimulation(so));
    const std::string name = edge::SimDistributionName(dist);
    *md +=
        "### " +
        std::string(dist == edge::SimDistribution::kBeta ? "Beta(0.5, 0.5)" : "Normal(0.5, 0.2)") +
        "\n\n";
    *md += "| budget (share of total cost) | trials |";
    for (const char* t : titles) *md += std::string(" ") + t + " |";
    *md += "\n|---|---|---|---|---|---|\n";
    for (std::size_t b = 0; b < so.budget_fractions.size(); ++b) {
      *md += "| " + Fmt("%.0f%%", 100 * so.budget_fractions[b]) + " | " +
             std::to_string(r.trials[b]) + " |";
      for (const auto& rule : r.rules) {
        *md += " " + Fmt("%.3f", rule.mean_objective[b]) + " (" + Fmt("%.3f", rule.mean_ratio[b]) +
               ") |";
      }
      *md += "\n";
    }
    *md += "| all | " + std::to_string(r.total_trials) + " |";
    for (const auto& rule : r.rules) {
      *md += " mean ratio " + Fmt("%.4f", rule.overall_mean_ratio) + ", worst " +
             Fmt("%.3f", rule.worst_ratio) + ", optimal in " +
             Fmt("%.1f", 100 * rule.optimal_share) + "% |";
    }
    *md += "\n\n";
    LinePlot plot;
    plot.title = "Scheduling simulation, " + name + " draws (Fig. 10 form)";
    plot.xlabel = "budget (% of the total cost)";
    plot.ylabel = "mean output accuracy F";
    plot.ymin = 0;
    plot.ymax = 1;
    for (std::size_t i = 0; i < r.rules.size(); ++i) {
      PlotSeries s;
      s.title = titles[i];
      for (std::size_t b = 0; b < so.budget_fractions.size(); ++b) {
        s.x.push_back(100 * so.budget_fractions[b]);
        s.y.push_back(r.rules[i].mean_objective[b]);
      }
      plot.series.push_back(s);
      if (i > 0) {
        PlotSeries h;
        h.title = std::string(titles[i]) + ", " + name;
        h.y = r.rules[i].ratios;
        hist.series.push_back(h);
      }
    }
    MLINK_ASSIGN_OR_RETURN(auto img,
                           report->Plot("sched-sim-" + name + ".png", "Fig. 10 " + name,
                                        [&](const std::string& p) { return PlotLines(plot, p); }));
    *md += img;
  }
  MLINK_ASSIGN_OR_RETURN(
      auto img, report->Plot("sched-sim-ratio.png", "Fig. 10 ratio to the optimum",
                             [&](const std::string& p) { return PlotHistogram(hist, p); }));
  *md += img;
  *md +=
      "Paper (Fig. 10): MLink's schedule is near-optimal and far above Standalone on both "
      "distributions.\n";
  return Status::Ok();
}

}  // namespace

Status EnsureTrace(const std::string& config, const std::string& path, int frames) {
  if (fs::exists(path)) {
    MLINK_ASSIGN_OR_RETURN(auto t, edge::Trace::Open(path));
    MLOG_INFO("eval", "trace cached").Kv("trace", path).Kv("frames", t->FrameCount());
    return Status::Ok();
  }
  MLINK_ASSIGN_OR_RETURN(auto options, edge::LoadEdgeOptions(config));
  if (options.has_source && options.source.uri.find("://") == std::string::npos &&
      !fs::exists(options.source.uri)) {
    return Status::NotFound("video " + options.source.uri + " (from " + config +
                            ") is missing; scripts/setup fetches it from opencv-doc");
  }
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  const std::string part = path + ".part-" + std::to_string(::getpid());
  fs::remove(part, ec);
  MLOG_INFO("eval", "recording a trace (every model on every frame)")
      .Kv("config", config)
      .Kv("trace", path)
      .Kv("frames", frames > 0 ? std::to_string(frames) : std::string("all"));
  const auto start = Clock::now();
  auto st = edge::Record(options, part, frames);
  if (!st.ok()) {
    fs::remove(part, ec);
    return st.status().WithContext("recording " + path);
  }
  fs::rename(part, path, ec);
  if (ec) return Status::Internal("cannot move the trace to " + path + ": " + ec.message());
  MLOG_INFO("eval", "trace recorded")
      .Kv("trace", path)
      .Kv("frames", st->frames)
      .Kv("seconds", std::chrono::duration<double>(Clock::now() - start).count());
  return Status::Ok();
}

ReportRun RunReport(const ReportOptions& o) {
  const auto start = Clock::now();
  ReportRun run;
  const char* known[] = {"links", "adapt", "federate", "online", "table5", "sched-sim"};
  for (const auto& name : o.only) {
    if (std::find(std::begin(known), std::end(known), name) == std::end(known)) {
      run.status = Status::InvalidArgument("unknown experiment '" + name +
                                           "'; expected one of links, adapt, federate, "
                                           "online, table5, sched-sim");
      return run;
    }
  }
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) {
    run.status = Status::Internal("cannot create " + o.out_dir + ": " + ec.message());
    return run;
  }
  Report report(o);
  run.summary.report_path = o.out_dir + "/report.md";
  // The file is rewritten after every section, so a long run shows what it has so far.
  auto write = [&](bool done) -> Status {
    run.summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::ostringstream head;
    head << "# mlink evaluation report\n\n"
         << "Every experiment of the MLink paper this project reproduces, regenerated by "
            "`mlink-eval report` "
         << "(entry point `scripts/eval`). Sections: " << Join(report.summary().sections, ", ")
         << ". " << (done ? "Total run time " : "Still running; so far ")
         << Fmt("%.0f", run.summary.seconds) << " s.\n\n";
    const std::string tmp = run.summary.report_path + ".tmp";
    {
      std::ofstream f(tmp);
      f << head.str() << report.Markdown();
      if (!f) return Status::Internal("cannot write " + tmp);
    }
    std::error_code rename_ec;
    fs::rename(tmp, run.summary.report_path, rename_ec);
    if (rename_ec)
      return Status::Internal("cannot write " + run.summary.report_path + ": " +
                              rename_ec.message());
    return Status::Ok();
  };
  struct Experiment {
    const char* name;
    const char* title;
    Status (*body)(const ReportOptions&, Report*, std::string*);
  };
  const Experiment experiments[] = {
      {"links", "Pairwise link performance on Fashion-MNIST (Table 3 form)", LinksSection},
      {"adapt", "Oracle links under domain shift (Table 4 form)", AdaptSection},
      {"federate", "Cross-domain aggregation and local-global fusion (Fig. 8 form)",
       FederateSection},
      {"online", "Online training policies on recorded video (Fig. 6 form)", OnlineSection},
      {"table5", "Scheduling vs Standalone at several budgets on recorded video (Table 5 form)",
       ScheduleSection},
      {"sched-sim", "Scheduling simulation on random problems (Fig. 10 form)", SimSection},
  };
  for (const auto& e : experiments) {
    if (!report.Wants(e.name)) continue;
    report.Section(e.name, e.title, [&](std::string* md) { return e.body(o, &report, md); });
    if (Status st = write(false); !st.ok()) {
      run.status = st;
      return run;
    }
  }
  const std::vector<std::string> pngs = report.summary().pngs, sections = report.summary().sections;
  run.summary.pngs = pngs;
  run.summary.sections = sections;
  if (Status st = write(true); !st.ok()) {
    run.status = st;
    return run;
  }
  run.status = report.status();
  MLOG_INFO("eval", "report written")
      .Kv("report", run.summary.report_path)
      .Kv("plots", run.summary.pngs.size())
      .Kv("seconds", run.summary.seconds);
  return run;
}

}  // namespace mlink::eval
