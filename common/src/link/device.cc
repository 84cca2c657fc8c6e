#include "mlink/link/device.h"

#include <dlfcn.h>
#include <torch/torch.h>

namespace mlink::link {

bool CudaAvailable() { return torch::cuda::is_available(); }

void SetTorchThreads(int threads) {
  if (threads <= 0) return;
  torch::set_num_threads(threads);
  // A LibTorch built against an external threaded BLAS (Debian's) leaves that BLAS's own thread
  // pool alone; its workers then spin beside ours on small matrices. Cap it where the BLAS has
  // the usual setter.
  using SetBlasThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetBlasThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(threads);
}

Result<Device> ResolveDevice(const std::string& name) {
  Device d;
  if (name == "cpu") return d;
  if (name == "auto") {
    d.cuda = CudaAvailable();
    return d;
  }
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    if (!CudaAvailable()) {
      return Status::FailedPrecondition(
          "device '" + name + "' requested, but this build's LibTorch sees no CUDA device (CPU-only build, "
          "or no GPU/driver); use 'cpu' or 'auto', or build with -DMLINK_WITH_CUDA=ON against a CUDA LibTorch");
    }
    d.cuda = true;
    if (name.size() > 5) {
      try {
        d.index = std::stoi(name.substr(5));
      } catch (...) {
        return Status::InvalidArgument("device '" + name + "': expected cuda:N with N a number");
      }
      if (d.index < 0 || d.index >= static_cast<int>(torch::cuda::device_count())) {
        return Status::InvalidArgument("device '" + name + "': only " + std::to_string(torch::cuda::device_count()) + " CUDA devices");
      }
    }
    return d;
  }
  return Status::InvalidArgument("device '" + name + "': expected one of cpu, cuda, cuda:N, auto");
}

}  // namespace mlink::link
