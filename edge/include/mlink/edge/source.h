// Frame sources through OpenCV: a video file, an RTSP/HTTP stream, a camera device, or a folder
// of images.
//
// Live sources (streams, cameras) are read by a grabber thread that keeps only the newest frame:
// when processing falls behind, Next() skips to the latest frame and counts the frames it never
// saw as drops. A stream that drops is reopened with exponential backoff, forever (a lost camera
// is logged, never fatal). Files and folders are read in order, with an optional frame-rate
// limit. Next() is called from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "mlink/edge/model.h"

namespace mlink::config {
class Section;
}

namespace mlink::edge {

struct SourceOptions {
  std::string uri;            // file path, rtsp:// or http(s):// URL, "camera:N", or a folder
  double max_fps = 0;         // 0 = as fast as processing goes
  double scale = 1.0;         // resize frames by this factor on read
  int64_t max_frames = 0;     // stop after this many frames (0 = no limit)
  int64_t start_frame = 0;    // files: skip to this frame first
  double reconnect_initial_s = 0.5;
  double reconnect_max_s = 30;
};

// Reads `source:` (errors recorded on the section).
SourceOptions SourceOptionsFromConfig(config::Section& section);

class FrameSource {
 public:
  enum class Kind { kFile, kStream, kCamera, kFolder };
  // Opens the source. A missing file or folder, or a file OpenCV cannot decode, is an error
  // naming it; a live stream that is down now is not (it is retried in the background).
  static Result<std::unique_ptr<FrameSource>> Open(const SourceOptions& options);
  virtual ~FrameSource() = default;

  // The next frame; nullopt at the end of a file/folder or after max_frames. Live sources wait
  // for a frame (returning an error only if `timeout_s` passes without one).
  virtual Result<std::optional<Frame>> Next(double timeout_s = 30) = 0;
  virtual Kind kind() const = 0;
  virtual int64_t dropped() const = 0;
  virtual int64_t reconnects() const = 0;
  virtual std::string description() const = 0;
};

}  // namespace mlink::edge
