// mlink-edge: one camera site.
//   mlink-edge --config site.yaml            serve (Algorithm 2): one JSON line per frame
//   mlink-edge --config site.yaml --check    validate the config, models, source and device
//   mlink-edge record --config site.yaml --out trace.db [--frames N]
//   mlink-edge label import FILE --config site.yaml   store labels for the oracle link
#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>

#include "mlink/common/log.h"
#include "mlink/edge/options.h"
#include "mlink/edge/record.h"
#include "mlink/edge/sample_store.h"
#include "mlink/edge/site.h"
#include "mlink/link/device.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlink-edge: a camera site that links black-box models"};
  std::string config_path = "configs/edge-site-a.yaml";
  bool check = false;
  int64_t max_frames = 0;
  app.add_option("-c,--config", config_path, "site config (YAML)");
  app.add_flag("--check", check, "validate the config, models, source and device, then exit");
  app.add_option("--frames", max_frames, "stop after this many frames (0 = until the source ends)");
  auto* record = app.add_subcommand("record", "run every model on every frame and store the outputs in a trace");
  std::string trace_path;
  record->add_option("-o,--out", trace_path, "trace file (SQLite) to write")->required();
  record->fallthrough();  // --config and --frames may follow the subcommand
  auto* label = app.add_subcommand("label", "ground-truth labels for the oracle link");
  auto* label_import = label->add_subcommand("import", "store labels from a CSV or JSON-lines file (frame or t=SECONDS, label)");
  std::string label_file;
  label_import->add_option("file", label_file, "labels: CSV 'frame,label' / 't=SECONDS,label' or JSON lines {\"frame\": F, \"label\": k}")
      ->required()->check(CLI::ExistingFile);
  label->fallthrough();
  label_import->fallthrough();
  label->require_subcommand(1);
  CLI11_PARSE(app, argc, argv);

  auto options = mlink::edge::LoadEdgeOptions(config_path);
  if (!options.ok()) {
    std::cerr << "mlink-edge: " << options.status().message() << "\n";
    return 2;
  }
  mlink::log::Level level;
  if (mlink::log::ParseLevel(options->log_level, &level)) mlink::log::SetLevel(level);
  mlink::log::Format format;
  if (mlink::log::ParseFormat(options->log_format, &format)) mlink::log::SetFormat(format);
  auto device = mlink::link::ResolveDevice(options->device);
  if (!device.ok()) {
    std::cerr << "mlink-edge: " << config_path << ": " << device.status().message() << "\n";
    return 2;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  if (*record) {
    auto st = mlink::edge::Record(*options, trace_path, max_frames, &g_stop);
    if (!st.ok()) {
      std::cerr << "mlink-edge record: " << st.status().message() << "\n";
      return 1;
    }
    return 0;
  }
  if (*label_import) {
    if (!options->learning.oracle_enabled) {
      std::cerr << "mlink-edge label import: " << config_path << " has no 'oracle' section; labels train the oracle link\n";
      return 2;
    }
    std::ifstream in(label_file);
    std::stringstream text;
    text << in.rdbuf();
    const auto& oracle = options->learning.oracle;
    auto labels = mlink::edge::ParseLabels(text.str(), oracle.dim, oracle.task == mlink::link::TaskKind::kSingleLabel);
    if (!labels.ok()) {
      std::cerr << "mlink-edge label import: " << label_file << ": " << labels.status().message() << "\n";
      return 2;
    }
    auto store = mlink::edge::SampleStore::Open(options->data_dir + "/samples.db", options->learning.store);
    if (!store.ok()) {
      std::cerr << "mlink-edge label import: " << store.status().message() << "\n";
      return 1;
    }
    auto r = (*store)->AddLabels(*labels, oracle.dim);
    if (!r.ok()) {
      std::cerr << "mlink-edge label import: " << r.status().message() << "\n";
      return 1;
    }
    std::cout << "stored " << r->stored << " of " << labels->size() << " labels in " << (*store)->path() << "\n";
    for (std::size_t i = 0; i < r->rejected.size() && i < 10; ++i) std::cout << "  not stored: " << r->rejected[i] << "\n";
    if (r->rejected.size() > 10) std::cout << "  ... and " << r->rejected.size() - 10 << " more\n";
    return r->stored > 0 || labels->empty() ? 0 : 1;
  }
  if (check) {
    for (const auto& c : options->models) {
      auto m = mlink::edge::CreateModel(c);
      if (!m.ok()) {
        std::cerr << "mlink-edge: " << m.status().message() << "\n";
        return 2;
      }
    }
    if (options->has_source) {
      auto s = mlink::edge::FrameSource::Open(options->source);
      if (!s.ok()) {
        std::cerr << "mlink-edge: " << s.status().message() << "\n";
        return 2;
      }
    }
    MLOG_INFO("edge", "config ok")
        .Kv("site", options->site)
        .Kv("device", device->ToString())
        .Kv("models", options->models.size())
        .Kv("cloud", options->federation ? options->cloud.ToString() : "none");
    return 0;
  }
  auto site = mlink::edge::Site::Create(*options);
  if (!site.ok()) {
    std::cerr << "mlink-edge: " << site.status().message() << "\n";
    return 2;
  }
  auto stats = (*site)->Run(&g_stop, max_frames);
  if (!stats.ok()) {
    std::cerr << "mlink-edge: " << stats.status().message() << "\n";
    return 1;
  }
  auto line = MLOG_INFO("edge", "done");
  line.Kv("site", options->site).Kv("frames", stats->frames).Kv("periods", stats->periods).Kv("failures", stats->failures)
      .Kv("dropped", stats->dropped).Kv("sampled", stats->sampled).Kv("overhead_share", stats->overhead_ms / std::max(1e-9, stats->model_ms));
  const auto ls = (*site)->learner()->stats();
  line.Kv("retrains", ls.retrains).Kv("rounds", ls.rounds_joined).Kv("updates_sent", ls.updates_sent)
      .Kv("update_bytes", ls.bytes_sent).Kv("labels", ls.labels);
  for (const auto& [id, choice] : ls.serving_choice) line.Kv("serving_" + id, choice);
  for (std::size_t i = 0; i < (*site)->models().size(); ++i) {
    line.Kv((*site)->models()[i].name + "_run", stats->runs[i]).Kv((*site)->models()[i].name + "_predicted", stats->predicted[i]);
  }
  return 0;
}
