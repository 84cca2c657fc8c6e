// Edge learning (Sections 4.1-4.3 of the paper), on one background thread per site:
//   - every served frame is handed over (never blocking the frame loop: a bounded queue) and
//     recorded in the sample store; frames on which every model ran are training samples;
//   - online training: after `retrain_samples` new samples, the links continue training from
//     their current parameters on the newest samples and the new LinkServing is swapped in
//     atomically (serving holds a shared_ptr; an old one lives until its last frame is done);
//   - oracle links: labels (from `mlink-edge label import` or the HTTP endpoint) train the link
//     deployed-model -> oracle, served beside the model's own output;
//   - federation (Algorithm 1, LocalUpdate): for each link named in the config, on every global
//     link received: train from the global parameters on local samples, upload the delta for the
//     open round; an update computed while offline is kept on disk and sent if its round is still
//     open when the site reconnects, dropped with a log line if not;
//   - local-global fusion: the local and the global link combined by a two-source ensemble whose
//     weights are trained on local data; the best of local, global and fused on local validation
//     rows is what serves.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mlink/common/dp.h"
#include "mlink/edge/link_serving.h"
#include "mlink/edge/model.h"
#include "mlink/edge/sample_store.h"
#include "mlink/edge/sampler.h"
#include "mlink/link/spec.h"
#include "mlink/protocol/endpoint.h"
#include "mlink/protocol/messages.h"

namespace mlink::edge {

struct OracleOptions {
  std::string model;                 // the deployed model whose outputs the oracle link reads
  int classes = 0;                   // single-label classes (labels are class numbers), or
  link::TaskKind task = link::TaskKind::kSingleLabel;
  int dim = 0;                       // label width (classes for single-label)
  int min_labels = 20;               // labels needed before the first training
  int retrain_labels = 20;           // new labels that trigger re-training
};

struct FederatedLink {
  std::string id;                    // the aggregator's link id
  std::string source;                // model name
  std::string target;                // model name, or "oracle"
  link::LinkSpec spec;               // derived from the models unless given in the config
  bool spec_given = false;
  // Send masked updates (protocol/secagg.md); the aggregator's link must use secure aggregation.
  // Such updates are online only: none is kept on disk for a later connection.
  bool secure_aggregation = false;
  // Local differential privacy (config key `privacy`): each upload is clipped to clip_norm and
  // gets N(0, (noise_multiplier clip_norm)^2) noise per coordinate before it leaves the site;
  // the site accounts its own releases (kept in federation.db) and stops uploading this link
  // before epsilon would pass epsilon_budget. Off unless noise_multiplier > 0.
  dp::PrivacyOptions privacy;
};

struct FederationOptions {
  bool enabled = false;
  protocol::Endpoint endpoint;
  std::string ca_file, cert_file, key_file;
  std::string site;
  std::vector<FederatedLink> links;
  int local_epochs = 5;              // LocalUpdate epochs per round
  int min_samples = 20;              // local samples needed to take part in a round
  double round_interval_s = 10;      // at most one update per link this often (rounds wait)
  double backoff_initial_s = 0.5;
  double backoff_max_s = 30;
  // Nothing heard from the aggregator for this long (a ping goes out at half of it) means the
  // connection is dead, e.g. a network cut that resets nothing: the site drops it and reconnects.
  double idle_timeout_s = 60;
  // TCP, TLS and WebSocket upgrade must complete within this (slow uplinks may need more).
  double connect_timeout_s = 10;
};

struct LearningOptions {
  SamplerOptions sampling;
  SampleStoreOptions store;
  int retrain_samples = 50;          // new training samples that trigger online re-training; 0 = never
  int retrain_epochs = 20;
  int train_window = 2000;           // newest samples used for training
  bool oracle_enabled = false;
  OracleOptions oracle;
  std::string http_listen = "127.0.0.1";
  int http_port = -1;                // label intake + /healthz; -1 = off, 0 = any free port
  FederationOptions federation;
  uint64_t seed = 1;
};

// What the site reports about its learning (for progress lines and tests).
struct LearnerStats {
  int64_t recorded = 0;              // frames recorded in the store
  int64_t dropped = 0;               // frames the queue had to drop (learner behind)
  int64_t retrains = 0;              // online re-trainings swapped in
  int64_t labels = 0;                // labels stored
  int64_t oracle_trainings = 0;
  int64_t rounds_joined = 0;         // updates acknowledged by the aggregator
  int64_t updates_sent = 0;
  int64_t updates_dropped = 0;       // offline updates whose round had closed
  int64_t updates_rejected = 0;
  int64_t bytes_sent = 0;
  bool connected = false;
  std::map<std::string, std::string> serving_choice;  // link id -> local | global | fused
  std::map<std::string, double> link_performance;      // link id -> p of what serves
  std::map<std::string, double> dp_epsilon;            // link id -> epsilon spent (local DP links)
  std::map<std::string, bool> dp_budget_spent;         // link id -> uploads stopped by the budget
};

// The oracle link as served: which model it reads, its output for a frame.
class OracleServing {
 public:
  virtual ~OracleServing() = default;
  virtual Result<std::vector<float>> Predict(const ModelOutput& model_output) const = 0;
  virtual std::string choice() const = 0;  // local, global or fused
};

class Learner {
 public:
  // Opens data_dir/samples.db and data_dir/federation.db; starts the thread, the HTTP endpoint
  // and the federation client as configured.
  static Result<std::unique_ptr<Learner>> Start(const std::string& site, const std::string& data_dir,
                                                const std::vector<ModelInfo>& models, const LearningOptions& options);
  ~Learner();  // stops: drains what is queued, closes the connection
  void Stop();

  // Serving thread: hand over one frame (copies; returns at once).
  void Submit(int64_t frame, double timestamp_s, const std::vector<ModelOutput>& outputs,
              const std::vector<bool>& ran, bool sampled);
  // Labels parsed elsewhere (HTTP thread, tests): queued for the learner thread.
  void SubmitLabels(std::vector<Label> labels);

  // The links serving uses now (null before the first training) and the oracle link (null
  // until trained). Cheap; call per frame.
  std::shared_ptr<const LinkServing> serving() const;
  std::shared_ptr<const OracleServing> oracle() const;
  // Bootstrap training done by the site: adopted, saved, and the start point of online training.
  void SetServing(std::shared_ptr<const LinkServing> serving);

  LearnerStats stats() const;
  uint16_t http_port() const;
  // Blocks until the queue is empty and no training is running (tests, shutdown), or timeout.
  bool WaitIdle(double timeout_s);

  struct Impl;

 private:
  explicit Learner(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlink::edge
