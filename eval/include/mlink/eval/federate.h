// Cross-domain aggregation and local-global fusion of oracle links (the paper's Section 4.3 and
// Fig. 8 form), run through the real system: an in-process aggregator (mlink-cloud's Aggregator,
// mutual TLS on loopback with certificates from scripts/gen-certs) and one edge learner per site
// (edge/learner.h: sample store, label intake, LocalUpdate, offline handling, fusion).
//
// Every site runs the same CNN (a black box trained on the original Fashion-MNIST images) on its
// own camera domain, a real shift of disjoint test images. The contributing sites label a share
// of their images and federate the oracle link cnn->oracle (Algorithm 1); the target site has a
// different domain, contributes no samples, and holds a few labels. Reported on the target
// site's held-out images: the CNN alone, the oracle link trained on its few labels (local), the
// global link after each round, and the fusion of local and global (ensemble weights trained on
// the target's labels), plus what the target site's learner chose to serve.
#pragma once

#include <string>
#include <vector>

#include "mlink/common/dp.h"
#include "mlink/common/status.h"
#include "mlink/eval/adapt.h"

namespace mlink::eval {

struct FederateOptions {
  std::string cnn_path;
  std::vector<std::string> site_shifts = {"washout:0.3:20", "washout:0.5:15", "washout:0.4:25", "washout:0.35:20"};
  std::string target_shift = "washout:0.45:20";
  int site_images = 2000;        // per contributing site
  double site_label_share = 0.1; // labelled share at contributing sites
  int target_images = 2000;
  int target_labels = 200;       // the target's own labels (local link, fusion)
  int rounds = 15;
  int local_epochs = 5;
  std::string work_dir;          // certificates and site stores (a temporary folder if empty)
  uint64_t seed = 1;
  // Differential privacy (off by default): "local" noises each site's uploads (site s draws from
  // seed privacy.seed + s when that is non-zero), "central" clips every update on the aggregator
  // and noises the sum. No budget: the run reports the epsilon its rounds spent.
  std::string dp_mode = "none";  // none, local, central
  dp::PrivacyOptions privacy;
  double clip_norm = 0;          // the aggregator clips every update to this L2 norm (0 = off)
};

struct FederateReport {
  double cnn_target = 0;             // the CNN on the target's held-out images
  double local = 0;                  // oracle link from the target's own labels only
  std::vector<double> global_by_round;  // global link after round r (index 0 = initial; -1 = not seen)
  double fused = 0;
  std::string served;                // what the target's learner serves: local, global, fused
  double served_accuracy = 0;
  double local_all_sites = 0;        // reference: one site's local link with its 10% labels, on its own domain
  int rounds = 0;
  int64_t update_bytes = 0;          // bytes of deltas the contributing sites uploaded
  double seconds = 0;
  std::size_t target_eval = 0;
  double epsilon = 0;                // spent by the rounds (per site for local DP), at privacy.delta
};

Result<FederateReport> RunFederation(const FederateOptions& options);
std::string FederateMarkdown(const FederateReport& r, const FederateOptions& o);

}  // namespace mlink::eval
