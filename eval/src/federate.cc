#include "mlink/eval/federate.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "mlink/cloud/aggregator.h"
#include "mlink/common/log.h"
#include "mlink/edge/learner.h"

namespace mlink::eval {

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kLinkId[] = "cnn->oracle";

link::LinkSpec OracleSpec() {
  link::LinkSpec s;
  s.source = link::OutputFormat::Vector(10);
  s.target = link::OutputFormat::Vector(10);
  s.task = link::TaskKind::kSingleLabel;
  return s;
}

FashionMnist Subset(const FashionMnist& d, const std::vector<std::size_t>& idx) {
  FashionMnist s;
  s.rows = static_cast<int>(idx.size());
  for (std::size_t i : idx) {
    s.pixels.insert(s.pixels.end(), d.pixels.begin() + static_cast<std::ptrdiff_t>(i * 784),
                    d.pixels.begin() + static_cast<std::ptrdiff_t>((i + 1) * 784));
    s.labels.push_back(d.labels[i]);
  }
  return s;
}

std::vector<std::size_t> Iota(std::size_t from, std::size_t to) {
  std::vector<std::size_t> v(to - from);
  std::iota(v.begin(), v.end(), from);
  return v;
}

double Accuracy(const link::Column& probs, const std::vector<uint8_t>& labels) {
  return ArgmaxAccuracy(probs, labels, Iota(0, labels.size()));
}

struct Site {
  std::string name;
  DomainShift shift;
  FashionMnist images;
  link::Column probs;
  int labels = 0;
  std::unique_ptr<edge::Learner> learner;
};

edge::LearningOptions SiteLearning(const std::string& dir, const std::string& name, uint16_t port, int local_epochs,
                                   int min_samples, const dp::PrivacyOptions& privacy) {
  edge::LearningOptions o;
  o.sampling.policy = "none";
  o.retrain_samples = 0;
  o.oracle_enabled = true;
  o.oracle.model = "cnn";
  o.oracle.classes = 10;
  o.oracle.dim = 10;
  o.oracle.min_labels = 20;
  o.oracle.retrain_labels = 20;
  o.store.recent_frames = 100000;
  o.store.max_labels = 100000;
  auto& f = o.federation;
  f.enabled = true;
  f.endpoint.host = "127.0.0.1";
  f.endpoint.port = port;
  f.endpoint.path = protocol::kFederationPath;
  f.ca_file = dir + "/certs/ca.pem";
  f.cert_file = dir + "/certs/" + name + ".pem";
  f.key_file = dir + "/certs/" + name + ".key";
  f.site = name;
  f.links.push_back({kLinkId, "cnn", "oracle", OracleSpec(), true, false, privacy});
  f.local_epochs = local_epochs;
  f.min_samples = min_samples;
  f.round_interval_s = 0;
  f.backoff_initial_s = 0.1;
  f.backoff_max_s = 2;
  return o;
}

Status Feed(Site* s) {
  std::vector<edge::Label> labels;
  for (int i = 0; i < s->images.rows; ++i) {
    edge::ModelOutput out;
    out.vec.assign(s->probs.row(static_cast<std::size_t>(i)), s->probs.row(static_cast<std::size_t>(i)) + 10);
    s->learner->Submit(i, i * 0.1, {out}, {true}, false);
    if (i < s->labels) {
      std::vector<float> one(10, 0.f);
      one[s->images.labels[static_cast<std::size_t>(i)]] = 1;
      labels.push_back({i, -1, one});
    }
  }
  if (!s->learner->WaitIdle(120)) return Status::DeadlineExceeded(s->name + ": recording its frames took over 120 s");
  s->learner->SubmitLabels(std::move(labels));
  return Status::Ok();
}

}  // namespace

Result<FederateReport> RunFederation(const FederateOptions& o) {
  const auto t0 = Clock::now();
  FederateReport rep;
  const std::string dir = o.work_dir.empty()
                              ? (std::filesystem::temp_directory_path() / ("mlink-federate-" + std::to_string(::getpid()))).string()
                              : o.work_dir;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::size_t n_sites = o.site_shifts.size();
  std::string names;
  for (std::size_t s = 0; s < n_sites; ++s) names += " site-" + std::to_string(s + 1);
  const std::string gen = std::string(MLINK_SOURCE_DIR) + "/scripts/gen-certs " + dir + "/certs" + names + " target > /dev/null";
  if (std::system(gen.c_str()) != 0) return Status::Internal("scripts/gen-certs failed (is openssl installed?)");

  MLINK_ASSIGN_OR_RETURN(auto cnn, ImageClassifier::Load(o.cnn_path));
  MLINK_ASSIGN_OR_RETURN(auto test, LoadFashionMnist(DefaultFashionMnistDir(), false));
  const std::size_t need = n_sites * static_cast<std::size_t>(o.site_images) + static_cast<std::size_t>(o.target_images);
  if (need > static_cast<std::size_t>(test.rows)) {
    return Status::InvalidArgument("the sites need " + std::to_string(need) + " images; the test split has " + std::to_string(test.rows));
  }
  std::vector<std::size_t> order = Iota(0, static_cast<std::size_t>(test.rows));
  std::mt19937_64 rng(o.seed);
  std::shuffle(order.begin(), order.end(), rng);

  std::vector<Site> sites(n_sites + 1);
  for (std::size_t s = 0; s <= n_sites; ++s) {
    Site& site = sites[s];
    const bool target = s == n_sites;
    site.name = target ? "target" : "site-" + std::to_string(s + 1);
    MLINK_ASSIGN_OR_RETURN(site.shift, ParseShift(target ? o.target_shift : o.site_shifts[s]));
    const std::size_t from = s * static_cast<std::size_t>(o.site_images);
    const std::size_t count = static_cast<std::size_t>(target ? o.target_images : o.site_images);
    std::vector<std::size_t> idx(order.begin() + static_cast<std::ptrdiff_t>(from), order.begin() + static_cast<std::ptrdiff_t>(from + count));
    site.images = ApplyShift(Subset(test, idx), site.shift, o.seed + s);
    MLINK_ASSIGN_OR_RETURN(site.probs, cnn->Run(site.images));
    site.labels = target ? o.target_labels : static_cast<int>(std::lround(o.site_label_share * o.site_images));
  }
  Site& target = sites.back();
  const std::size_t eval_from = static_cast<std::size_t>(o.target_labels);
  const std::vector<std::size_t> eval_idx = Iota(eval_from, static_cast<std::size_t>(target.images.rows));
  rep.target_eval = eval_idx.size();
  const link::Column eval_x = target.probs.Select(eval_idx);
  std::vector<uint8_t> eval_y;
  for (std::size_t i : eval_idx) eval_y.push_back(target.images.labels[i]);
  rep.cnn_target = Accuracy(eval_x, eval_y);
  const link::Column onehot_target = OneHot(target.images.labels);
  const link::Column tx = target.probs.Select(Iota(0, eval_from)), ty = onehot_target.Select(Iota(0, eval_from));

  cloud::CloudOptions co;
  co.port = 0;
  co.http_port = 0;
  co.ca_file = dir + "/certs/ca.pem";
  co.cert_file = dir + "/certs/cloud.pem";
  co.key_file = dir + "/certs/cloud.key";
  co.data_dir = dir + "/cloud";
  cloud::LinkOptions lo;
  lo.id = kLinkId;
  lo.spec = OracleSpec();
  lo.init_seed = o.seed;
  lo.min_edges = static_cast<int>(n_sites);
  lo.quorum = static_cast<int>(n_sites);
  lo.round_deadline_s = 120;
  lo.clip_norm = o.clip_norm;
  if (o.dp_mode == "central") {
    lo.clip_norm = o.privacy.clip_norm;
    lo.privacy = o.privacy;
  }
  co.links.push_back(lo);
  MLINK_ASSIGN_OR_RETURN(auto agg, cloud::Aggregator::Start(co));

  auto global_accuracy = [&](const std::vector<float>& params) -> Result<double> {
    MLINK_ASSIGN_OR_RETURN(auto l, link::Link::Create(OracleSpec(), 1));
    FlatParams p = l->GetParams();
    p.data = params;
    MLINK_RETURN_IF_ERROR(l->SetParams(p));
    MLINK_ASSIGN_OR_RETURN(auto pred, l->Predict(eval_x));
    return Accuracy(pred, eval_y);
  };
  MLINK_ASSIGN_OR_RETURN(auto g0, agg->GetLink(kLinkId));
  MLINK_ASSIGN_OR_RETURN(double acc0, global_accuracy(g0.params));
  rep.global_by_round.push_back(acc0);

  for (std::size_t s = 0; s <= n_sites; ++s) {
    const bool is_target = s == n_sites;
    // The target site never has enough samples to contribute: it only receives.
    dp::PrivacyOptions privacy;
    if (o.dp_mode == "local" && !is_target) {
      privacy = o.privacy;
      if (privacy.seed != 0) privacy.seed += s;
    }
    auto lo2 = SiteLearning(dir, sites[s].name, agg->port(), o.local_epochs, is_target ? 1000000000 : 20, privacy);
    MLINK_ASSIGN_OR_RETURN(sites[s].learner, edge::Learner::Start(sites[s].name, dir + "/" + sites[s].name, {{"cnn", "eval", link::OutputFormat::Vector(10), link::TaskKind::kSingleLabel, 0}}, lo2));
  }
  for (auto& s : sites) MLINK_RETURN_IF_ERROR(Feed(&s));
  MLOG_INFO("eval", "sites fed; federating").Kv("sites", n_sites).Kv("rounds", o.rounds);

  uint64_t seen = 0;
  const auto deadline = Clock::now() + std::chrono::minutes(10);
  while (static_cast<int>(seen) < o.rounds) {
    if (Clock::now() > deadline) return Status::DeadlineExceeded("federation did not complete " + std::to_string(o.rounds) + " rounds in 10 minutes");
    MLINK_ASSIGN_OR_RETURN(auto g, agg->GetLink(kLinkId));
    if (g.rounds_completed > seen) {
      seen = g.rounds_completed;
      MLINK_ASSIGN_OR_RETURN(double acc, global_accuracy(g.params));
      while (rep.global_by_round.size() < seen) rep.global_by_round.push_back(-1);  // closed between two polls
      rep.global_by_round.push_back(acc);
      MLOG_INFO("eval", "round").Kv("round", seen).Kv("global_accuracy_on_target", acc);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  rep.rounds = static_cast<int>(seen);
  if (o.dp_mode != "none") rep.epsilon = dp::GaussianEpsilon(o.privacy.noise_multiplier, seen, o.privacy.delta).epsilon;
  for (std::size_t s = 0; s < n_sites; ++s) {
    rep.update_bytes += sites[s].learner->stats().bytes_sent;
    sites[s].learner->Stop();
  }
  MLINK_ASSIGN_OR_RETURN(auto final_global, agg->GetLink(kLinkId));

  // The target's rows, computed here from the same pieces its learner uses.
  link::TrainOptions t;
  t.seed = o.seed;
  MLINK_ASSIGN_OR_RETURN(auto local, link::Link::Create(OracleSpec(), o.seed));
  MLINK_RETURN_IF_ERROR(local->Train(tx, ty, t).status());
  MLINK_ASSIGN_OR_RETURN(auto local_pred, local->Predict(eval_x));
  rep.local = Accuracy(local_pred, eval_y);
  MLINK_ASSIGN_OR_RETURN(auto global, link::Link::Create(OracleSpec(), 1));
  FlatParams gp = global->GetParams();
  gp.data = final_global.params;
  MLINK_RETURN_IF_ERROR(global->SetParams(gp));
  std::vector<std::unique_ptr<link::Link>> two;
  two.push_back(local->Clone());
  two.push_back(global->Clone());
  MLINK_ASSIGN_OR_RETURN(auto fused, link::Ensemble::Create(std::move(two)));
  MLINK_RETURN_IF_ERROR(fused->TrainWeights({tx, tx}, ty, t).status());
  MLINK_ASSIGN_OR_RETURN(auto fused_pred, fused->Predict({eval_x, eval_x}));
  rep.fused = Accuracy(fused_pred, eval_y);

  // Centralised reference: one link on all contributing sites' labels pooled (what federated
  // averaging approximates without moving any data).
  link::Column px = link::Column::Vectors(10, {}), py = link::Column::Vectors(10, {});
  for (std::size_t s = 0; s < n_sites; ++s) {
    const auto idx = Iota(0, static_cast<std::size_t>(sites[s].labels));
    auto x = sites[s].probs.Select(idx);
    auto y = OneHot(sites[s].images.labels).Select(idx);
    px.values.insert(px.values.end(), x.values.begin(), x.values.end());
    py.values.insert(py.values.end(), y.values.begin(), y.values.end());
  }
  MLINK_ASSIGN_OR_RETURN(auto pooled, link::Link::Create(OracleSpec(), o.seed));
  MLINK_RETURN_IF_ERROR(pooled->Train(px, py, t).status());
  MLINK_ASSIGN_OR_RETURN(auto pooled_pred, pooled->Predict(eval_x));
  rep.local_all_sites = Accuracy(pooled_pred, eval_y);

  // What the target site's learner serves (it chose on its own labels).
  edge::Learner& tl = *target.learner;
  for (int i = 0; i < 100 && (!tl.oracle() || tl.stats().oracle_trainings == 0); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (auto oracle = tl.oracle()) {
    rep.served = oracle->choice();
    int right = 0;
    for (std::size_t r = 0; r < eval_x.rows(); ++r) {
      edge::ModelOutput out;
      out.vec.assign(eval_x.row(r), eval_x.row(r) + 10);
      auto v = oracle->Predict(out);
      if (v.ok()) right += static_cast<int>(std::max_element(v->begin(), v->end()) - v->begin()) == eval_y[r];
    }
    rep.served_accuracy = static_cast<double>(right) / static_cast<double>(eval_x.rows());
  }
  tl.Stop();
  agg->Stop();
  if (o.work_dir.empty()) std::filesystem::remove_all(dir);
  rep.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return rep;
}

std::string FederateMarkdown(const FederateReport& r, const FederateOptions& o) {
  std::ostringstream s;
  char buf[160];
  s << "Contributing sites (" << o.site_shifts.size() << ", " << o.site_images << " images each, "
    << static_cast<int>(o.site_label_share * 100 + 0.5) << "% labelled):";
  for (const auto& sh : o.site_shifts) s << " " << sh;
  s << ". Target site: " << o.target_shift << ", " << o.target_labels << " labels, contributes nothing; accuracy on its "
    << r.target_eval << " other images. " << r.rounds << " rounds of Algorithm 1 through the aggregator (mutual TLS), "
    << o.local_epochs << " local epochs per round.";
  if (o.clip_norm > 0 && o.dp_mode != "central") s << " The aggregator clips every update to L2 norm " << o.clip_norm << ".";
  if (o.dp_mode != "none") {
    std::snprintf(buf, sizeof(buf), " Differential privacy: %s, clip_norm %g, noise_multiplier %g; epsilon %.2f at delta %g%s.",
                  o.dp_mode.c_str(), o.privacy.clip_norm, o.privacy.noise_multiplier, r.epsilon, o.privacy.delta,
                  o.dp_mode == "local" ? " per site" : "");
    s << buf;
  }
  s << "\n\n";
  s << "| On the target site | accuracy (%) |\n|---|---|\n";
  auto row = [&](const std::string& name, double v) {
    std::snprintf(buf, sizeof(buf), "| %s | %.1f |\n", name.c_str(), 100 * v);
    s << buf;
  };
  row("CNN alone (shifted domain)", r.cnn_target);
  row("local oracle link (" + std::to_string(o.target_labels) + " own labels)", r.local);
  row("global oracle link, round 0 (initial)", r.global_by_round.front());
  row("global oracle link, round " + std::to_string(r.rounds) + " (no own samples)", r.global_by_round.back());
  row("fused local + global (weights on own labels)", r.fused);
  row("served by the target's learner (" + r.served + ")", r.served_accuracy);
  row("reference: one link on all sites' labels pooled centrally", r.local_all_sites);
  s << "\nGlobal oracle link on the target site by round:\n\n| round |";
  for (std::size_t i = 0; i < r.global_by_round.size(); ++i) s << " " << i << " |";
  s << "\n|---|";
  for (std::size_t i = 0; i < r.global_by_round.size(); ++i) s << "---|";
  s << "\n| accuracy (%) |";
  for (double v : r.global_by_round) {
    if (v < 0) {
      s << " - |";
      continue;
    }
    std::snprintf(buf, sizeof(buf), " %.1f |", 100 * v);
    s << buf;
  }
  std::snprintf(buf, sizeof(buf), "\n\nDelta bytes uploaded by the contributing sites: %lld (%.1f KiB per site per round). Run time %.0f s.\n",
                static_cast<long long>(r.update_bytes),
                r.rounds ? r.update_bytes / 1024.0 / static_cast<double>(o.site_shifts.size()) / r.rounds : 0.0, r.seconds);
  s << buf;
  return s.str();
}

}  // namespace mlink::eval
