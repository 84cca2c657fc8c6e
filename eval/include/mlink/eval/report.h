// `mlink-eval report`: runs every experiment this project reproduces and writes one Markdown
// report with PNG plots (gnuplot, see plot.h) into a results folder:
//   links     pairwise link performance matrix on the Fashion-MNIST zoo (Table 3 form), heatmap
//   adapt     oracle links under domain shift (Table 4 form), grouped bars
//   federate  cross-domain aggregation and fusion (Fig. 8 form), accuracy over rounds
//   online    online training policies on recorded video (Fig. 6 form), accuracy over time
//   table5    scheduling vs Standalone at several budgets on recorded video (Table 5 form)
//   sched-sim the scheduling simulation on random problems (Fig. 10 form)
// The video experiments need traces of OpenCV's detectors on vtest.avi and Megamind.avi
// (`mlink-edge record` with configs/edge-site-a.yaml and edge-site-c.yaml); they are recorded
// into `trace_dir` when absent and reused afterwards.
//
// An experiment that fails is reported in its section and the others still run; the returned
// Status is then the first failure (the report is written either way).
#pragma once

#include <string>
#include <vector>

#include "mlink/common/status.h"
#include "mlink/edge/scheduler_sim.h"
#include "mlink/eval/links_matrix.h"
#include "mlink/eval/online.h"
#include "mlink/eval/schedule.h"

namespace mlink::eval {

struct ReportOptions {
  std::string out_dir = "results";  // report.md and its PNGs
  std::string trace_dir;            // recorded traces; default out_dir + "/traces"
  std::string cnn_path;             // empty: the cached Fashion-MNIST CNN (trained on first use)
  std::string fmnist_dir;           // empty: DefaultFashionMnistDir()
  // Experiments to run (names above); empty: all of them.
  std::vector<std::string> only;

  // Table 3.
  LinksMatrixOptions links = [] {
    LinksMatrixOptions o;
    o.link_rows = 1000;
    return o;
  }();

  // Table 4.
  std::vector<std::string> adapt_shifts = {"rotate:30", "washout:0.4:20", "invert", "blur:2"};
  std::vector<double> adapt_shares = {0.01, 0.05, 0.10};
  int adapt_seeds = 3;
  int adapt_domain_rows = 10000;
  int adapt_epochs = 100;

  // Fig. 8.
  std::vector<std::string> federate_targets = {"washout:0.45:20", "rotate:15"};
  int federate_rounds = 15;
  int federate_site_images = 2000;
  int federate_target_images = 2000;
  int federate_target_labels = 200;

  // Recording (site configs and frames per video; 0 = the whole video).
  std::string vtest_config;     // default: configs/edge-site-a.yaml in the source tree
  std::string megamind_config;  // default: configs/edge-site-c.yaml
  int vtest_frames = 0;
  int megamind_frames = 0;

  // Fig. 6 (traces are filled in from the recordings).
  OnlineOptions online = [] {
    OnlineOptions o;
    o.active = {"fullbody", "motion"};
    return o;
  }();

  // Table 5 (trace filled in per video).
  ScheduleEvalOptions schedule;

  // Fig. 10: both distributions.
  int sim_instances = 500;
  int sim_models = 10;
};

struct ReportSummary {
  std::string report_path;            // out_dir/report.md
  std::vector<std::string> pngs;      // file names written, relative to out_dir
  std::vector<std::string> sections;  // experiments that ran and succeeded
  double seconds = 0;
};

// Runs the experiments (progress in the log) and writes out_dir/report.md. The summary comes
// back when the report was written; the Status is the first experiment's failure, if any.
struct ReportRun {
  ReportSummary summary;
  Status status;
};
ReportRun RunReport(const ReportOptions& options);

// Records `frames` frames (0: all) of the site in `config` into `path` unless it exists; the
// recording goes to a temporary name first, so an interrupted one is never mistaken for a trace.
Status EnsureTrace(const std::string& config, const std::string& path, int frames);

}  // namespace mlink::eval
