// LinkSpec: what a model link maps (source output format -> target output format and task).
//
// A spec is a plain value with a stable hash, so the cloud and every edge can check that they
// speak of the same link before exchanging parameters. Torch-free on purpose.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "mlink/common/status.h"

namespace mlink::config {
class Section;
}

namespace mlink::link {

// Token conventions for sequence outputs: ids 0..2 are reserved, content tokens are >= 3.
inline constexpr int32_t kPadToken = 0;
inline constexpr int32_t kBosToken = 1;
inline constexpr int32_t kEosToken = 2;
inline constexpr int32_t kFirstContentToken = 3;

enum class FormatKind { kVector, kSequence };

// The output of a black-box model: a fixed-length vector (dim) or a variable-length token
// sequence over a vocabulary of `vocab` ids (including the three reserved ones), at most
// `max_len` content tokens long.
struct OutputFormat {
  FormatKind kind = FormatKind::kVector;
  int dim = 0;       // vector length (kVector)
  int vocab = 0;     // vocabulary size incl. reserved ids (kSequence)
  int max_len = 0;   // longest sequence in content tokens (kSequence)

  static OutputFormat Vector(int dim) { return {FormatKind::kVector, dim, 0, 0}; }
  static OutputFormat Sequence(int vocab, int max_len) { return {FormatKind::kSequence, 0, vocab, max_len}; }
  bool operator==(const OutputFormat& o) const {
    return kind == o.kind && dim == o.dim && vocab == o.vocab && max_len == o.max_len;
  }
};

// The target model's learning task: decides the output activation, the loss and the metric.
enum class TaskKind {
  kSingleLabel,  // softmax; cross-entropy with soft labels; metric accuracy (argmax agreement)
  kMultiLabel,   // sigmoid; binary cross-entropy; metric mAP
  kRegression,   // linear; MSE or L1; metric 1 - MAE/MAD (MAD of the targets), clipped to [0, 1]
  kCount,        // linear; MSE or L1; metric count accuracy: share with |error| < 0.5
  kBox,          // linear, 4-D box [x1, y1, x2, y2]; MSE; metric mean IoU
  kSequence,     // token cross-entropy with a padding mask; greedy decoding; metric 1 - WER
};

enum class RegressionLoss { kMse, kL1 };

const char* TaskKindName(TaskKind t);
Result<TaskKind> ParseTaskKind(const std::string& name);

struct LinkSpec {
  OutputFormat source;
  OutputFormat target;
  TaskKind task = TaskKind::kSingleLabel;
  RegressionLoss regression_loss = RegressionLoss::kMse;
  int hidden = 0;         // MLP hidden units; 0 = the paper's default, 2 x target length, but at
                          // least kMinDefaultHidden (a 1-value target would get 2 ReLU units,
                          // and whether both die at the start decides the link: measured)
  double dropout = 0.0;   // dropout on MLP hidden units while training
  int embed_dim = 32;     // token embedding size (sequence sources/targets)
  int lstm_hidden = 64;   // LSTM state size (sequence sources/targets)

  // The architecture is implied by the formats: vec2vec, seq2vec, vec2seq, seq2seq.
  std::string ArchName() const;
  // Target length used for the default hidden size: dim, or max_len + 1 for sequences.
  int TargetLength() const;
  static constexpr int kMinDefaultHidden = 8;
  int HiddenUnits() const { return hidden > 0 ? hidden : std::max(kMinDefaultHidden, 2 * TargetLength()); }

  // Checks every field; the error names the field and what was expected.
  Status Validate() const;
  // Stable across runs and platforms: FNV-1a over a canonical text form (see Canonical()).
  uint64_t Hash() const;
  std::string HashHex() const;
  std::string Canonical() const;

  bool operator==(const LinkSpec& o) const { return Canonical() == o.Canonical(); }
  bool operator!=(const LinkSpec& o) const { return !(*this == o); }
};

// Reads a spec from a config mapping:
//   source: {kind: vector, dim: 10}            # or {kind: sequence, vocab: 40, max_len: 8}
//   target: {kind: vector, dim: 4}
//   task: single_label                         # multi_label, regression, count, box, sequence
//   hidden: 0, dropout: 0.0, loss: mse, embed_dim: 32, lstm_hidden: 64   (optional)
// Errors are recorded on the section (see config.h); call Validate() afterwards.
LinkSpec LinkSpecFromConfig(config::Section& section);

}  // namespace mlink::link
