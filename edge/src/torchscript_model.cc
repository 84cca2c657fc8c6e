// TorchScript models exported by a user (torch.jit.script / trace), loaded with torch::jit::load.
// The only torch translation unit on the edge side.
#include <torch/script.h>

#include <filesystem>
#include <opencv2/imgproc.hpp>

#include "models_internal.h"

namespace mlink::edge {

namespace {

class TorchScriptModel : public Model {
 public:
  TorchScriptModel(const ModelConfig& c, torch::jit::Module module, ModelInfo info)
      : c_(c), module_(std::move(module)), info_(std::move(info)) {
    module_.eval();
  }
  const ModelInfo& info() const override { return info_; }

  // Preprocessing from config: resize to input_width x input_height, optional grayscale, scale
  // to float; the input tensor is [1, C, H, W].
  Result<ModelOutput> Run(const Frame& f) override {
    if (f.image.empty()) return Status::InvalidArgument("model '" + info_.name + "': empty frame");
    try {
      cv::Mat img;
      cv::resize(f.image, img, cv::Size(c_.input_width, c_.input_height), 0, 0, cv::INTER_AREA);
      if (c_.grayscale && img.channels() == 3) cv::cvtColor(img, img, cv::COLOR_BGR2GRAY);
      img.convertTo(img, CV_32F, c_.input_scale);
      const int ch = img.channels();
      auto t = torch::from_blob(img.data, {1, img.rows, img.cols, ch}, torch::kFloat).permute({0, 3, 1, 2}).contiguous();
      torch::NoGradGuard no_grad;
      auto out = module_.forward({t}).toTensor().to(torch::kFloat).flatten().contiguous();
      if (out.numel() != info_.format.dim) {
        return Status::Internal("model '" + info_.name + "': TorchScript module gave " + std::to_string(out.numel()) +
                                " values, config says output_dim " + std::to_string(info_.format.dim));
      }
      std::vector<float> v(out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
      return NormaliseForTask(info_.task, std::move(v));
    } catch (const std::exception& e) {
      return Status::Internal("model '" + info_.name + "' (TorchScript): " + e.what());
    }
  }

 private:
  ModelConfig c_;
  torch::jit::Module module_;
  ModelInfo info_;
};

}  // namespace

Result<std::unique_ptr<Model>> CreateTorchScriptModel(const ModelConfig& c) {
  if (c.file.empty()) return Status::InvalidArgument("model '" + c.name + "': kind torchscript needs a 'file'");
  if (!std::filesystem::exists(c.file)) return Status::NotFound("model '" + c.name + "': TorchScript file '" + c.file + "' not found");
  MLINK_ASSIGN_OR_RETURN(ModelInfo info, VectorInfo(c));
  try {
    auto module = torch::jit::load(c.file);
    return std::unique_ptr<Model>(new TorchScriptModel(c, std::move(module), std::move(info)));
  } catch (const std::exception& e) {
    return Status::InvalidArgument("model '" + c.name + "': " + c.file + " is not a loadable TorchScript file: " + e.what());
  }
}

}  // namespace mlink::edge
