#include "mlink/edge/source.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "mlink/common/config.h"
#include "mlink/common/log.h"

namespace mlink::edge {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

SourceOptions SourceOptionsFromConfig(config::Section& s) {
  SourceOptions o;
  s.Required("uri", &o.uri);
  if (!o.uri.empty() && o.uri.find("://") == std::string::npos && o.uri.rfind("camera:", 0) != 0) {
    s.OptionalPath("uri", &o.uri);  // resolve file paths relative to the config
  }
  s.Optional("max_fps", &o.max_fps, 0.0, 1000.0);
  s.Optional("scale", &o.scale, 0.05, 4.0);
  s.Optional("max_frames", &o.max_frames, 0, INT64_MAX);
  s.Optional("start_frame", &o.start_frame, 0, INT64_MAX);
  s.Optional("reconnect_initial_s", &o.reconnect_initial_s, 0.01, 3600.0);
  s.Optional("reconnect_max_s", &o.reconnect_max_s, 0.01, 86400.0);
  return o;
}

namespace {

cv::Mat Scaled(const cv::Mat& m, double scale) {
  if (scale == 1.0 || m.empty()) return m;
  cv::Mat out;
  cv::resize(m, out, cv::Size(), scale, scale, cv::INTER_AREA);
  return out;
}

// Paces reads to max_fps.
class Pacer {
 public:
  explicit Pacer(double fps) : period_(fps > 0 ? 1.0 / fps : 0) {}
  void Wait() {
    if (period_ <= 0) return;
    auto now = Clock::now();
    if (next_ > now) std::this_thread::sleep_until(next_);
    next_ = std::max(now, next_) + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(period_));
  }

 private:
  double period_;
  Clock::time_point next_ = Clock::now();
};

class FileSource : public FrameSource {
 public:
  FileSource(SourceOptions o, cv::VideoCapture cap) : o_(std::move(o)), cap_(std::move(cap)), pacer_(o_.max_fps) {
    fps_ = cap_.get(cv::CAP_PROP_FPS);
    if (!(fps_ > 0)) fps_ = 25;
    index_ = o_.start_frame;
  }
  Result<std::optional<Frame>> Next(double) override {
    if (o_.max_frames > 0 && served_ >= o_.max_frames) return std::optional<Frame>();
    pacer_.Wait();
    cv::Mat img;
    try {
      if (!cap_.read(img) || img.empty()) return std::optional<Frame>();
    } catch (const cv::Exception& e) {
      return Status::DataLoss("video " + o_.uri + ": frame " + std::to_string(index_) + " cannot be decoded: " + e.what());
    }
    Frame f{Scaled(img, o_.scale), index_, static_cast<double>(index_) / fps_};
    ++index_;
    ++served_;
    return std::optional<Frame>(std::move(f));
  }
  Kind kind() const override { return Kind::kFile; }
  int64_t dropped() const override { return 0; }
  int64_t reconnects() const override { return 0; }
  std::string description() const override { return "video file " + o_.uri; }

 private:
  SourceOptions o_;
  cv::VideoCapture cap_;
  Pacer pacer_;
  double fps_ = 25;
  int64_t index_ = 0;
  int64_t served_ = 0;
};

class FolderSource : public FrameSource {
 public:
  FolderSource(SourceOptions o, std::vector<std::string> files) : o_(std::move(o)), files_(std::move(files)), pacer_(o_.max_fps) {
    pos_ = static_cast<std::size_t>(std::min<int64_t>(o_.start_frame, static_cast<int64_t>(files_.size())));
  }
  Result<std::optional<Frame>> Next(double) override {
    while (pos_ < files_.size()) {
      if (o_.max_frames > 0 && served_ >= o_.max_frames) break;
      pacer_.Wait();
      const std::string& f = files_[pos_];
      int64_t idx = static_cast<int64_t>(pos_++);
      cv::Mat img = cv::imread(f, cv::IMREAD_COLOR);
      if (img.empty()) {
        MLOG_WARN("source", "unreadable image skipped").Kv("file", f);
        ++dropped_;
        continue;
      }
      ++served_;
      return std::optional<Frame>(Frame{Scaled(img, o_.scale), idx, static_cast<double>(idx)});
    }
    return std::optional<Frame>();
  }
  Kind kind() const override { return Kind::kFolder; }
  int64_t dropped() const override { return dropped_; }
  int64_t reconnects() const override { return 0; }
  std::string description() const override { return "image folder " + o_.uri; }

 private:
  SourceOptions o_;
  std::vector<std::string> files_;
  Pacer pacer_;
  std::size_t pos_ = 0;
  int64_t served_ = 0;
  int64_t dropped_ = 0;
};

// A stream or camera: a grabber thread keeps the newest frame; reconnects with backoff.
class LiveSource : public FrameSource {
 public:
  LiveSource(SourceOptions o, Kind kind, int camera) : o_(std::move(o)), kind_(kind), camera_(camera) {
    thread_ = std::thread([this] { Grab(); });
  }
  ~LiveSource() override {
    stop_ = true;
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  Result<std::optional<Frame>> Next(double timeout_s) override {
    if (o_.max_frames > 0 && served_ >= o_.max_frames) return std::optional<Frame>();
    pacer_.Wait();
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [this] { return have_ || stop_; })) {
      return Status::Unavailable(description() + ": no frame for " + std::to_string(timeout_s) + " s (reconnecting)");
    }
    if (!have_) return std::optional<Frame>();
    have_ = false;
    // Frames grabbed since the last one we served were never processed: they are drops.
    if (last_served_ >= 0) dropped_ += std::max<int64_t>(0, latest_.index - last_served_ - 1);
    last_served_ = latest_.index;
    ++served_;
    return std::optional<Frame>(latest_);
  }
  Kind kind() const override { return kind_; }
  int64_t dropped() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return dropped_;
  }
  int64_t reconnects() const override { return reconnects_.load(); }
  std::string description() const override { return (kind_ == Kind::kCamera ? "camera " : "stream ") + o_.uri; }

 private:
  void Grab() {
    double backoff = o_.reconnect_initial_s;
    int64_t index = 0;
    auto start = Clock::now();
    while (!stop_) {
      cv::VideoCapture cap;
      bool opened = false;
      try {
        opened = kind_ == Kind::kCamera ? cap.open(camera_) : cap.open(o_.uri);
      } catch (const cv::Exception&) {
        opened = false;
      }
      if (opened) {
        MLOG_INFO("source", "connected").Kv("source", description());
        backoff = o_.reconnect_initial_s;
        cv::Mat img;
        while (!stop_) {
          bool ok = false;
          try {
            ok = cap.read(img) && !img.empty();
          } catch (const cv::Exception&) {
            ok = false;
          }
          if (!ok) break;
          std::lock_guard<std::mutex> lock(mu_);
          latest_ = Frame{Scaled(img, o_.scale), index++, std::chrono::duration<double>(Clock::now() - start).count()};
          have_ = true;
          cv_.notify_all();
        }
      }
      if (stop_) break;
      ++reconnects_;
      MLOG_WARN("source", "source lost; reconnecting").Kv("source", description()).Kv("in_s", backoff);
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::duration<double>(backoff), [this] { return stop_.load(); });
      backoff = std::min(o_.reconnect_max_s, backoff * 2);
    }
  }

  SourceOptions o_;
  Kind kind_;
  int camera_;
  Pacer pacer_{0};
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Frame latest_;          // GUARDED_BY(mu_)
  bool have_ = false;     // GUARDED_BY(mu_)
  int64_t dropped_ = 0;   // GUARDED_BY(mu_)
  int64_t last_served_ = -1;
  int64_t served_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> reconnects_{0};
};

}  // namespace

Result<std::unique_ptr<FrameSource>> FrameSource::Open(const SourceOptions& o) {
  if (o.uri.empty()) return Status::InvalidArgument("frame source: empty uri");
  if (o.uri.rfind("camera:", 0) == 0) {
    int cam = 0;
    try {
      cam = std::stoi(o.uri.substr(7));
    } catch (...) {
      return Status::InvalidArgument("frame source '" + o.uri + "': expected camera:N");
    }
    return std::unique_ptr<FrameSource>(new LiveSource(o, Kind::kCamera, cam));
  }
  if (o.uri.find("://") != std::string::npos) {
    return std::unique_ptr<FrameSource>(new LiveSource(o, Kind::kStream, 0));
  }
  std::error_code ec;
  if (!fs::exists(o.uri, ec)) return Status::NotFound("frame source '" + o.uri + "': no such file or folder");
  if (fs::is_directory(o.uri, ec)) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(o.uri, ec)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp" || ext == ".ppm" || ext == ".pgm") {
        files.push_back(e.path().string());
      }
    }
    if (files.empty()) return Status::NotFound("frame source '" + o.uri + "': folder holds no images (png, jpg, bmp, ppm, pgm)");
    std::sort(files.begin(), files.end());
    return std::unique_ptr<FrameSource>(new FolderSource(o, std::move(files)));
  }
  cv::VideoCapture cap;
  try {
    cap.open(o.uri);
  } catch (const cv::Exception& e) {
    return Status::InvalidArgument("frame source '" + o.uri + "': " + e.what());
  }
  if (!cap.isOpened()) return Status::InvalidArgument("frame source '" + o.uri + "': OpenCV cannot decode this file as video");
  if (o.start_frame > 0) cap.set(cv::CAP_PROP_POS_FRAMES, static_cast<double>(o.start_frame));
  return std::unique_ptr<FrameSource>(new FileSource(o, std::move(cap)));
}

}  // namespace mlink::edge
