// Run-time device selection for LibTorch work: "cpu", "cuda", "cuda:N" or "auto" (CUDA if this
// build and machine have it, else CPU). The CPU build never needs CUDA.
#pragma once

#include <string>

#include "mlink/common/status.h"

namespace mlink::link {

struct Device {
  bool cuda = false;
  int index = 0;
  std::string ToString() const { return cuda ? "cuda:" + std::to_string(index) : "cpu"; }
};

// "cuda" on a machine or build without CUDA is kFailedPrecondition naming what is missing.
Result<Device> ResolveDevice(const std::string& name);
// Whether this build's LibTorch can reach a CUDA device now.
bool CudaAvailable();
// Sets LibTorch's intra-op thread count, and that of the BLAS it calls where that has its own
// pool (0 leaves the defaults). Process-wide.
void SetTorchThreads(int threads);

}  // namespace mlink::link
