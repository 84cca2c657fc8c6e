// Columns of model outputs: n rows of one model's outputs, either vectors or token sequences.
// Torch-free; the link library converts them to tensors internally.
#pragma once

#include <cstdint>
#include <vector>

#include "mlink/link/spec.h"

namespace mlink::link {

struct Column {
  FormatKind kind = FormatKind::kVector;
  int dim = 0;                               // vector length (kVector)
  std::vector<float> values;                 // rows * dim, row-major (kVector)
  std::vector<std::vector<int32_t>> seqs;    // one token list per row (kSequence), no BOS/EOS

  static Column Vectors(int dim, std::vector<float> values) {
    Column c;
    c.kind = FormatKind::kVector;
    c.dim = dim;
    c.values = std::move(values);
    return c;
  }
  static Column Sequences(std::vector<std::vector<int32_t>> seqs) {
    Column c;
    c.kind = FormatKind::kSequence;
    c.seqs = std::move(seqs);
    return c;
  }

  std::size_t rows() const {
    if (kind == FormatKind::kSequence) return seqs.size();
    return dim > 0 ? values.size() / static_cast<std::size_t>(dim) : 0;
  }
  const float* row(std::size_t i) const { return values.data() + i * static_cast<std::size_t>(dim); }

  // Rows `idx` of this column, in that order.
  Column Select(const std::vector<std::size_t>& idx) const;
  // Checks that the column fits `format` (kind, dim, token ids in range, lengths); `what` names
  // the column in the error.
  Status Check(const OutputFormat& format, const char* what) const;
};

}  // namespace mlink::link
