// OpenCV built-in detectors as black-box models: HOG people detector, cascade classifiers
// (Haar/LBP files from opencv-data), MOG2 motion, and cv::dnn networks (ONNX, Caffe, TF).
#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>
#include <opencv2/video/background_segm.hpp>

#include <filesystem>

#include "mlink/edge/models.h"
#include "models_internal.h"

namespace mlink::edge {

namespace {

cv::Mat Prepare(const Frame& f, double scale) {
  if (scale == 1.0) return f.image;
  cv::Mat out;
  cv::resize(f.image, out, cv::Size(), scale, scale, cv::INTER_AREA);
  return out;
}

// Detections -> the configured output: a count, or the largest box normalised to [0, 1].
ModelOutput Detections(const std::vector<cv::Rect>& boxes, const cv::Size& size, bool box) {
  ModelOutput out;
  if (!box) {
    out.vec = {static_cast<float>(boxes.size())};
    return out;
  }
  out.vec = {0, 0, 0, 0};
  const cv::Rect* best = nullptr;
  for (const auto& b : boxes) {
    if (!best || b.area() > best->area()) best = &b;
  }
  if (best) {
    out.vec = {static_cast<float>(best->x) / size.width, static_cast<float>(best->y) / size.height,
               static_cast<float>(best->x + best->width) / size.width,
               static_cast<float>(best->y + best->height) / size.height};
  }
  return out;
}

ModelInfo DetectorInfo(const ModelConfig& c) {
  ModelInfo info;
  info.name = c.name;
  info.kind = c.kind;
  bool box = c.output == "box";
  info.format = link::OutputFormat::Vector(box ? 4 : 1);
  info.task = box ? link::TaskKind::kBox : link::TaskKind::kCount;
  info.declared_cost = c.declared_cost;
  return info;
}

class HogModel : public Model {
 public:
  explicit HogModel(const ModelConfig& c) : info_(DetectorInfo(c)), scale_(c.scale), box_(c.output == "box") {
    hog_.setSVMDetector(cv::HOGDescriptor::getDefaultPeopleDetector());
  }
  const ModelInfo& info() const override { return info_; }
  Result<ModelOutput> Run(const Frame& f) override {
    if (f.image.empty()) return Status::InvalidArgument("model '" + info_.name + "': empty frame");
    try {
      cv::Mat img = Prepare(f, scale_);
      std::vector<cv::Rect> found;
      hog_.detectMultiScale(img, found, 0, cv::Size(8, 8), cv::Size(), 1.05, 2);
      return Detections(found, img.size(), box_);
    } catch (const cv::Exception& e) {
      return Status::Internal("model '" + info_.name + "' (HOG): " + e.what());
    }
  }

 private:
  ModelInfo info_;
  double scale_;
  bool box_;
  cv::HOGDescriptor hog_;
};

class CascadeModel : public Model {
 public:
  CascadeModel(const ModelConfig& c, cv::CascadeClassifier cascade)
      : info_(DetectorInfo(c)), scale_(c.scale), box_(c.output == "box"), neighbors_(static_cast<int>(c.min_neighbors)),
        cascade_(std::move(cascade)) {}
  const ModelInfo& info() const override { return info_; }
  Result<ModelOutput> Run(const Frame& f) override {
    if (f.image.empty()) return Status::InvalidArgument("model '" + info_.name + "': empty frame");
    try {
      cv::Mat img = Prepare(f, scale_), gray;
      cv::cvtColor(img, gray, cv::COLOR_BGR2GRAY);
      cv::equalizeHist(gray, gray);
      std::vector<cv::Rect> found;
      cascade_.detectMultiScale(gray, found, 1.1, neighbors_);
      return Detections(found, img.size(), box_);
    } catch (const cv::Exception& e) {
      return Status::Internal("model '" + info_.name + "' (cascade): " + e.what());
    }
  }

 private:
  ModelInfo info_;
  double scale_;
  bool box_;
  int neighbors_;
  cv::CascadeClassifier cascade_;
};

// Share of foreground pixels under a MOG2 background model (a motion meter).
class Mog2Model : public Model {
 public:
  explicit Mog2Model(const ModelConfig& c) : scale_(c.scale), mog_(cv::createBackgroundSubtractorMOG2()) {
    info_.name = c.name;
    info_.kind = c.kind;
    info_.format = link::OutputFormat::Vector(1);
    info_.task = link::TaskKind::kRegression;
    info_.declared_cost = c.declared_cost;
  }
  const ModelInfo& info() const override { return info_; }
  Result<ModelOutput> Run(const Frame& f) override {
    if (f.image.empty()) return Status::InvalidArgument("model '" + info_.name + "': empty frame");
    try {
      cv::Mat img = Prepare(f, scale_), mask;
      mog_->apply(img, mask);
      double fg = cv::countNonZero(mask > 127) / static_cast<double>(mask.total());
      return ModelOutput{{static_cast<float>(fg)}, {}};
    } catch (const cv::Exception& e) {
      return Status::Internal("model '" + info_.name + "' (MOG2): " + e.what());
    }
  }

 private:
  ModelInfo info_;
  double scale_;
  cv::Ptr<cv::BackgroundSubtractorMOG2> mog_;
};

// A network file through cv::dnn; the output blob is flattened (softmax applied for
// single_label tasks if the values are not already a distribution).
class DnnModel : public Model {
 public:
  DnnModel(const ModelConfig& c, cv::dnn::Net net, ModelInfo info) : c_(c), net_(std::move(net)), info_(std::move(info)) {}
  const ModelInfo& info() const override { return info_; }
  Result<ModelOutput> Run(const Frame& f) override {
    if (f.image.empty()) return Status::InvalidArgument("model '" + info_.name + "': empty frame");
    try {
      cv::Mat img = f.image;
      if (c_.grayscale && img.channels() == 3) cv::cvtColor(img, img, cv::COLOR_BGR2GRAY);
      cv::Mat blob = cv::dnn::blobFromImage(img, c_.input_scale, cv::Size(c_.input_width, c_.input_height));
      net_.setInput(blob);
      cv::Mat out = net_.forward().reshape(1, 1);
      out.convertTo(out, CV_32F);
      if (static_cast<int>(out.total()) != info_.format.dim) {
        return Status::Internal("model '" + info_.name + "': network gave " + std::to_string(out.total()) +
                                " values, config says output_dim " + std::to_string(info_.format.dim));
      }
      std::vector<float> v(out.begin<float>(), out.end<float>());
      return NormaliseForTask(info_.task, std::move(v));
    } catch (const cv::Exception& e) {
      return Status::Internal("model '" + info_.name + "' (dnn): " + e.what());
    }
  }

 private:
  ModelConfig c_;
  cv::dnn::Net net_;
  ModelInfo info_;
};

}  // namespace

std::string OpenCvDataDir() {
  for (const char* d : {"/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades"}) {
    if (std::filesystem::exists(d)) return d;
  }
  return "/usr/share/opencv4/haarcascades";
}

Result<std::unique_ptr<Model>> CreateOpenCvModel(const ModelConfig& c) {
  if (c.output != "count" && c.output != "box") {
    return Status::InvalidArgument("model '" + c.name + "': output must be count or box, got '" + c.output + "'");
  }
  if (!(c.scale > 0 && c.scale <= 4)) return Status::InvalidArgument("model '" + c.name + "': scale must be in (0, 4]");
  if (c.kind == "hog") return std::unique_ptr<Model>(new HogModel(c));
  if (c.kind == "mog2") return std::unique_ptr<Model>(new Mog2Model(c));
  if (c.kind == "cascade") {
    std::string path = c.cascade;
    if (path.empty()) return Status::InvalidArgument("model '" + c.name + "': kind cascade needs a 'cascade' file");
    if (!std::filesystem::path(path).is_absolute() && !std::filesystem::exists(path)) {
      for (const char* sub : {"", "/../lbpcascades"}) {
        std::string cand = OpenCvDataDir() + sub + "/" + path;
        if (std::filesystem::exists(cand)) {
          path = cand;
          break;
        }
      }
    }
    if (!std::filesystem::exists(path)) {
      return Status::NotFound("model '" + c.name + "': cascade file '" + c.cascade + "' not found (looked in " +
                              OpenCvDataDir() + "; install Debian's opencv-data)");
    }
    cv::CascadeClassifier cascade;
    try {
      if (!cascade.load(path)) return Status::InvalidArgument("model '" + c.name + "': " + path + " is not a cascade classifier file");
    } catch (const cv::Exception& e) {
      return Status::InvalidArgument("model '" + c.name + "': cannot load cascade " + path + ": " + e.what());
    }
    return std::unique_ptr<Model>(new CascadeModel(c, std::move(cascade)));
  }
  if (c.kind == "dnn") {
    if (!std::filesystem::exists(c.file)) return Status::NotFound("model '" + c.name + "': network file '" + c.file + "' not found");
    if (c.output_dim <= 0) return Status::InvalidArgument("model '" + c.name + "': kind dnn needs output_dim > 0");
    MLINK_ASSIGN_OR_RETURN(ModelInfo info, VectorInfo(c));
    try {
      cv::dnn::Net net = cv::dnn::readNet(c.file, c.config_file);
      if (net.empty()) return Status::InvalidArgument("model '" + c.name + "': OpenCV could not read " + c.file);
      return std::unique_ptr<Model>(new DnnModel(c, std::move(net), std::move(info)));
    } catch (const cv::Exception& e) {
      return Status::InvalidArgument("model '" + c.name + "': cannot load network " + c.file + ": " + e.what());
    }
  }
  return Status::InvalidArgument("model '" + c.name + "': not an OpenCV model kind: '" + c.kind + "'");
}

}  // namespace mlink::edge
