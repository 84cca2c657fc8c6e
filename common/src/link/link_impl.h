// Internal: what a Link holds (shared by the link library's translation units).
#pragma once

#include "link/modules.h"
#include "mlink/link/link.h"

namespace mlink::link {

inline torch::Device TorchDevice(const Device& d) {
  return d.cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(d.index)) : torch::Device(torch::kCPU);
}

struct Link::Impl {
  LinkSpec spec;
  internal::StackedLink module{nullptr};
  Device device;

  torch::Device torch_device() const { return TorchDevice(device); }
  Result<internal::SourceBatch> Pack(const Column& source) const {
    return internal::PackSources({spec}, {&source}, spec.source.dim, spec.source.max_len + 1);
  }
};

}  // namespace mlink::link
