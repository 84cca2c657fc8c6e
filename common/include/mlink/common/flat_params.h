// Flat parameter vectors: a link's named parameters as one contiguous float buffer with the
// names and shapes needed to put them back, and a checksum. This is the unit that federation
// moves around (global links, updates/deltas), so it is deliberately free of LibTorch types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mlink/common/status.h"

namespace mlink {

struct FlatParams {
  std::vector<std::string> names;            // parameter names, in module registration order
  std::vector<std::vector<int64_t>> shapes;  // one shape per name
  std::vector<float> data;                   // all parameters, concatenated in `names` order

  std::size_t size() const { return data.size(); }

  // 64-bit FNV-1a over names, shapes and the raw float bytes. Equal layouts and bit-equal values
  // give equal checksums on every platform this builds on (little-endian IEEE floats).
  uint64_t Checksum() const;
  // Checksum of the layout alone (names and shapes): two ends agree on what a vector means.
  uint64_t LayoutHash() const;

  // Shapes are non-negative, names unique and non-empty, and the element count matches data.
  Status Validate() const;
  bool SameLayout(const FlatParams& other) const;
  // True if every value is finite (no NaN/Inf).
  bool AllFinite() const;
  // Euclidean norm of data.
  double L2Norm() const;
};

// after - before, element-wise (same layout required).
Result<FlatParams> Subtract(const FlatParams& after, const FlatParams& before);
// x += alpha * y, element-wise (same layout required).
Status Axpy(float alpha, const FlatParams& y, FlatParams* x);

// FNV-1a, 64-bit, over raw bytes; exposed for protocol checksums.
uint64_t Fnv1a64(const void* data, std::size_t size, uint64_t seed = 0xcbf29ce484222325ULL);

}  // namespace mlink
