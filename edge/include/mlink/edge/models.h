// Model adapters built from config, and the OpenCV built-ins.
//
//   models:
//     - name: hog                  # unique per site
//       kind: hog                  # hog | cascade | mog2 | dnn | torchscript | kserve | trace
//       output: count              # detectors: count (1-D, task count) or box (4-D, the largest
//                                  #   detection as [x1, y1, x2, y2] / frame size, task box)
//       scale: 0.5                 # resize the frame by this factor first (detectors)
//       cascade: haarcascade_fullbody.xml   # cascade: file, absolute or under the opencv-data folder
//       cost_ms: 0                 # declared cost; 0 = measure latency
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mlink/edge/model.h"

namespace mlink::config {
class Section;
}

namespace mlink::edge {

struct ModelConfig {
  std::string name;
  std::string kind;
  std::string output = "count";   // count | box (detectors)
  double scale = 1.0;
  std::string cascade;            // cascade classifier file
  double min_neighbors = 3;
  double declared_cost = 0;
  // cv::dnn and TorchScript files
  std::string file;
  std::string config_file;        // cv::dnn second file (e.g. Caffe prototxt), optional
  int input_width = 64, input_height = 64;
  bool grayscale = false;
  double input_scale = 1.0 / 255;
  int output_dim = 0;
  std::string task = "single_label";
  // KServe
  std::string url;
  std::string remote_model;
  std::string input_name = "input";
  std::string output_name;
  double timeout_s = 2.0;
  // trace replay
  std::string trace;              // trace SQLite file
  std::string trace_model;        // model name inside the trace (default: name)
};

// Reads `models:` entries (errors recorded on the section, see config.h).
std::vector<ModelConfig> ModelConfigsFromConfig(config::Section& root);

// Builds one model; a missing file, an unknown kind or an unreachable endpoint is an error that
// names the model and the thing.
Result<std::unique_ptr<Model>> CreateModel(const ModelConfig& config);

// The folder of OpenCV's cascade files (Debian's opencv-data).
std::string OpenCvDataDir();

}  // namespace mlink::edge
