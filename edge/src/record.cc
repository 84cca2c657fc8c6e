#include "mlink/edge/record.h"

#include <chrono>

#include "mlink/common/log.h"
#include "mlink/edge/trace.h"

namespace mlink::edge {

using Clock = std::chrono::steady_clock;

Result<RecordStats> Record(const EdgeOptions& o, const std::string& path, int64_t max_frames, const std::atomic<bool>* stop) {
  if (!o.has_source) return Status::InvalidArgument("record: the site config has no 'source'");
  if (o.models.empty()) return Status::InvalidArgument("record: the site config has no 'models'");
  std::vector<std::unique_ptr<Model>> models;
  std::vector<ModelInfo> infos;
  for (const auto& c : o.models) {
    MLINK_ASSIGN_OR_RETURN(auto m, CreateModel(c));
    infos.push_back(m->info());
    models.push_back(std::move(m));
  }
  SourceOptions so = o.source;
  if (max_frames > 0) so.max_frames = max_frames;
  MLINK_ASSIGN_OR_RETURN(auto source, FrameSource::Open(so));
  MLINK_ASSIGN_OR_RETURN(auto trace, Trace::Create(path, source->description()));
  MLINK_RETURN_IF_ERROR(trace->SetModels(infos));

  const std::size_t k = models.size();
  RecordStats stats;
  std::vector<double> lat_sum(k, 0);
  std::vector<int64_t> lat_n(k, 0);
  auto start = Clock::now();
  MLINK_RETURN_IF_ERROR(trace->Begin());
  MLOG_INFO("record", "recording").Kv("source", source->description()).Kv("models", k).Kv("trace", path);
  while (!(stop && stop->load())) {
    MLINK_ASSIGN_OR_RETURN(auto frame, source->Next());
    if (!frame) break;
    std::vector<ModelOutput> outs(k);
    std::vector<double> lat(k, 0);
    std::vector<bool> ok(k, true);
    for (std::size_t i = 0; i < k; ++i) {
      auto t0 = Clock::now();
      auto r = models[i]->Run(*frame);
      lat[i] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      if (r.ok()) {
        outs[i] = std::move(r).value();
        lat_sum[i] += lat[i];
        ++lat_n[i];
      } else {
        ok[i] = false;
        ++stats.failures;
        MLOG_WARN("record", "model failed on frame; skipped").Kv("model", infos[i].name).Kv("frame", frame->index).Kv("error", r.status().message());
      }
    }
    MLINK_RETURN_IF_ERROR(trace->AddFrame(frame->index, frame->timestamp_s, outs, lat, ok));
    ++stats.frames;
    if (stats.frames % 50 == 0) {
      MLINK_RETURN_IF_ERROR(trace->Commit());
      MLINK_RETURN_IF_ERROR(trace->Begin());
      double secs = std::chrono::duration<double>(Clock::now() - start).count();
      auto line = MLOG_INFO("record", "progress");
      line.Kv("frames", stats.frames).Kv("fps", stats.frames / secs);
      for (std::size_t i = 0; i < k; ++i) line.Kv(infos[i].name + "_ms", lat_n[i] ? lat_sum[i] / lat_n[i] : 0.0);
    }
  }
  MLINK_RETURN_IF_ERROR(trace->Commit());
  for (std::size_t i = 0; i < k; ++i) stats.mean_latency_ms.push_back(lat_n[i] ? lat_sum[i] / lat_n[i] : 0.0);
  MLOG_INFO("record", "done").Kv("frames", stats.frames).Kv("failures", stats.failures).Kv("trace", path);
  return stats;
}

}  // namespace mlink::edge
