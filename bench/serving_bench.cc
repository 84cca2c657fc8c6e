// Per-frame overhead of link serving and scheduling next to the models' own cost, on vtest.avi
// with OpenCV's detectors (HOG, two cascades, MOG2) under a budget of 40% of running them all.
// Prints one JSON line: model time and serving overhead per frame and their ratio (target < 1%).
//   bench_serving [video] [frames]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "mlink/common/log.h"
#include "mlink/edge/site.h"

using namespace mlink::edge;

int main(int argc, char** argv) {
  std::string video = argc > 1 ? argv[1] : std::string(std::getenv("HOME") ? std::getenv("HOME") : "/root") + "/.cache/mlink/videos/vtest.avi";
  const int64_t frames = argc > 2 ? std::atoll(argv[2]) : 300;
  mlink::log::SetLevel(mlink::log::Level::kWarn);
  EdgeOptions o;
  o.site = "bench";
  o.has_source = true;
  o.source.uri = video;
  auto add = [&](const std::string& name, const std::string& kind, const std::string& cascade, double scale) {
    ModelConfig c;
    c.name = name;
    c.kind = kind;
    c.cascade = cascade;
    c.scale = scale;
    o.models.push_back(c);
  };
  add("hog", "hog", "", 1.0);
  add("fullbody", "cascade", "haarcascade_fullbody.xml", 0.5);
  add("lowerbody", "cascade", "haarcascade_lowerbody.xml", 0.5);
  add("motion", "mog2", "", 0.25);
  o.serving.sink = "/dev/null";
  o.data_dir = (std::filesystem::temp_directory_path() / ("mlink-serving-bench-" + std::to_string(::getpid()))).string();
  o.learning.sampling.policy = "none";  // serving alone: no active sampling, no re-training
  o.serving.bootstrap_frames = 60;
  o.serving.period_frames = 100;
  o.serving.profile_frames = 3;
  o.serving.budget_ms = 60;  // running all four costs ~100-150 ms per frame here
  auto site = Site::Create(o);
  if (!site.ok()) {
    std::fprintf(stderr, "%s\n", site.status().ToString().c_str());
    return 1;
  }
  auto st = (*site)->Run(nullptr, frames);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.status().ToString().c_str());
    return 1;
  }
  int64_t predicted = 0;
  for (auto p : st->predicted) predicted += p;
  double model = st->model_ms / st->frames, over = st->overhead_ms / st->frames;
  std::printf("{\"bench\":\"serving_overhead\",\"frames\":%lld,\"model_outputs_predicted\":%lld,\"model_ms_per_frame\":%.3f,"
              "\"serving_overhead_ms_per_frame\":%.4f,\"overhead_over_model_time\":%.5f,\"target\":0.01,"
              "\"bootstrap_training_ms\":%.1f}\n",
              static_cast<long long>(st->frames), static_cast<long long>(predicted), model, over, over / model, st->training_ms);
  site->reset();
  std::filesystem::remove_all(o.data_dir);
  return 0;
}
