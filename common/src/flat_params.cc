#include "mlink/common/flat_params.h"

#include <cmath>
#include <unordered_set>

namespace mlink {

uint64_t Fnv1a64(const void* data, std::size_t size, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (std::size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t FlatParams::LayoutHash() const {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (std::size_t i = 0; i < names.size(); ++i) {
    h = Fnv1a64(names[i].data(), names[i].size(), h);
    const char sep = '\0';
    h = Fnv1a64(&sep, 1, h);
    if (i < shapes.size()) {
      for (int64_t d : shapes[i]) h = Fnv1a64(&d, sizeof(d), h);
    }
    const int64_t end = -1;
    h = Fnv1a64(&end, sizeof(end), h);
  }
  return h;
}

uint64_t FlatParams::Checksum() const {
  uint64_t h = LayoutHash();
  return Fnv1a64(data.data(), data.size() * sizeof(float), h);
}

Status FlatParams::Validate() const {
  if (names.size() != shapes.size()) {
    return Status::InvalidArgument("flat parameters: " + std::to_string(names.size()) + " names but " +
                                   std::to_string(shapes.size()) + " shapes");
  }
  std::unordered_set<std::string> seen;
  std::size_t total = 0;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) return Status::InvalidArgument("flat parameters: parameter " + std::to_string(i) + " has an empty name");
    if (!seen.insert(names[i]).second) return Status::InvalidArgument("flat parameters: duplicate name '" + names[i] + "'");
    std::size_t n = 1;
    for (int64_t d : shapes[i]) {
      if (d < 0) return Status::InvalidArgument("flat parameters: '" + names[i] + "' has a negative dimension");
      n *= static_cast<std::size_t>(d);
    }
    total += n;
  }
  if (total != data.size()) {
    return Status::InvalidArgument("flat parameters: shapes hold " + std::to_string(total) +
                                   " values but data has " + std::to_string(data.size()));
  }
  return Status::Ok();
}

bool FlatParams::SameLayout(const FlatParams& o) const {
  return names == o.names && shapes == o.shapes && data.size() == o.data.size();
}

bool FlatParams::AllFinite() const {
  for (float v : data) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

double FlatParams::L2Norm() const {
  double s = 0;
  for (float v : data) s += static_cast<double>(v) * v;
  return std::sqrt(s);
}

Result<FlatParams> Subtract(const FlatParams& after, const FlatParams& before) {
  if (!after.SameLayout(before)) return Status::InvalidArgument("flat parameters: layouts differ, cannot subtract");
  FlatParams out = after;
  for (std::size_t i = 0; i < out.data.size(); ++i) out.data[i] -= before.data[i];
  return out;
}

Status Axpy(float alpha, const FlatParams& y, FlatParams* x) {
  if (!x->SameLayout(y)) return Status::InvalidArgument("flat parameters: layouts differ, cannot add");
  for (std::size_t i = 0; i < x->data.size(); ++i) x->data[i] += alpha * y.data[i];
  return Status::Ok();
}

}  // namespace mlink
