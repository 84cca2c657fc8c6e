// The TorchScript adapter of the oracle-link experiment: the only torch code behind adapt.h.
// LibTorch exceptions stop here and become a Status naming the model file.
#include <torch/script.h>

#include "mlink/eval/adapt.h"

namespace mlink::eval {

struct ImageClassifier::Impl {
  std::string path;
  // forward() on a loaded module is safe to call concurrently for inference.
  mutable torch::jit::Module module;
};

ImageClassifier::ImageClassifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageClassifier::~ImageClassifier() = default;

Result<std::unique_ptr<ImageClassifier>> ImageClassifier::Load(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  try {
    impl->module = torch::jit::load(path, torch::kCPU);
    impl->module.eval();
  } catch (const c10::Error& e) {
    return Status::InvalidArgument("TorchScript model " + path +
                                   " cannot be loaded: " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::InvalidArgument("TorchScript model " + path + " cannot be loaded: " + e.what());
  }
  return std::unique_ptr<ImageClassifier>(new ImageClassifier(std::move(impl)));
}

Result<link::Column> ImageClassifier::Run(const FashionMnist& images, int batch) const {
  if (batch <= 0) return Status::InvalidArgument("ImageClassifier::Run: batch must be positive");
  if (images.pixels.size() != std::size_t(images.rows) * 784) {
    return Status::InvalidArgument("ImageClassifier::Run: pixels do not hold rows 28x28 images");
  }
  std::vector<float> out;
  out.reserve(std::size_t(images.rows) * 10);
  try {
    torch::NoGradGuard no_grad;
    for (int start = 0; start < images.rows; start += batch) {
      const int n = std::min(batch, images.rows - start);
      auto x =
          torch::from_blob(const_cast<uint8_t*>(images.pixels.data()) + std::size_t(start) * 784,
                           {n, 1, 28, 28}, torch::kUInt8)
              .to(torch::kFloat)
              .div_(255.0);
      auto y = impl_->module.forward({x}).toTensor().to(torch::kFloat).contiguous();
      if (y.dim() != 2 || y.size(0) != n || y.size(1) != 10) {
        return Status::InvalidArgument("TorchScript model " + impl_->path + " returned shape " +
                                       c10::str(y.sizes()) + ", expected [" + std::to_string(n) +
                                       ", 10]");
      }
      out.insert(out.end(), y.data_ptr<float>(), y.data_ptr<float>() + std::size_t(n) * 10);
    }
  } catch (const c10::Error& e) {
    return Status::Internal("TorchScript model " + impl_->path +
                            " failed on a batch: " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::Internal("TorchScript model " + impl_->path + " failed on a batch: " + e.what());
  }
  return link::Column::Vectors(10, std::move(out));
}

}  // namespace mlink::eval
