// Internal: the stacked link module. L links of one architecture run as one computation over
// stacked, zero-padded weights ([L, ...] tensors). A single Link is the L = 1 case, so there is
// one implementation of each architecture. Padded weights start at zero and provably stay zero
// (their inputs or their gradients are zero), and padded outputs are masked out of losses and
// softmaxes, so every link behaves exactly as a standalone network of its own size.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "mlink/common/flat_params.h"
#include "mlink/common/status.h"
#include "mlink/link/data.h"
#include "mlink/link/spec.h"

namespace mlink::link::internal {

enum class Arch { kVec2Vec, kSeq2Vec, kVec2Seq, kSeq2Seq };
Arch ArchOf(const LinkSpec& spec);
bool SameArch(const LinkSpec& a, const LinkSpec& b);

// Padded source rows of a group: vec [L, n, Din] (float) or tokens [L, n, T] (long) + mask.
struct SourceBatch {
  torch::Tensor vec;
  torch::Tensor tokens;
  torch::Tensor mask;  // [L, n, T] bool: true at real tokens
  SourceBatch Rows(const torch::Tensor& idx) const;  // index_select along dim 1
  SourceBatch Slice(int64_t start, int64_t len) const;  // a view of rows [start, start + len)
  SourceBatch To(const torch::Device& d) const;
};

// Padded target rows: vec [L, n, Dout] or tokens [L, n, To] (content + EOS, then PAD).
struct TargetBatch {
  torch::Tensor vec;
  torch::Tensor tokens;
  TargetBatch Rows(const torch::Tensor& idx) const;
  TargetBatch To(const torch::Device& d) const;
};

// Decoder state for greedy decoding, stepped one token at a time.
struct DecoderState {
  torch::Tensor h, c;       // [L, B, Hl]
  torch::Tensor mem;        // [L, B, S, Hl]
  torch::Tensor mem_mask;   // [L, B, S] bool
};

class StackedLinkImpl : public torch::nn::Module {
 public:
  // All specs must share the architecture. Parameters are initialised with bounds from each
  // link's own true fan-in, from torch's global RNG (the caller seeds it) or, given one seed
  // per link, link l from its own generator seeded with seeds[l]: then link l starts exactly as
  // a single link created with manual_seed(seeds[l]) (Link::Create(spec, seed)) does.
  explicit StackedLinkImpl(std::vector<LinkSpec> specs, std::vector<uint64_t> seeds = {});

  const std::vector<LinkSpec>& specs() const { return specs_; }
  int64_t num_links() const { return static_cast<int64_t>(specs_.size()); }
  Arch arch() const { return arch_; }
  bool seq_target() const { return arch_ == Arch::kVec2Seq || arch_ == Arch::kSeq2Seq; }
  int64_t out_len() const { return out_len_; }  // Dout, or To = max_len + 1 for sequences
  // Width of Forward's `hidden` output.
  int64_t hidden_width() const { return seq_target() ? lstm_ : hidden_; }

  // Vector targets: logits [L, B, Dout]. Sequence targets: teacher-forced logits
  // [L, B, To, Vout] (needs y). With `hidden`, also the link's hidden representation of each
  // row: the MLP's hidden layer for vector targets, the source encoding for sequence targets.
  torch::Tensor Forward(const SourceBatch& x, const TargetBatch* y, torch::Tensor* hidden = nullptr);
  // Per-link mean loss [L].
  torch::Tensor Loss(const torch::Tensor& logits, const TargetBatch& y) const;
  // Per-link, per-row loss [L, B] (sequences: mean over each row's real tokens).
  torch::Tensor RowLoss(const torch::Tensor& logits, const TargetBatch& y) const;
  // Vector targets: activated outputs [L, B, Dout] (padded dims zero).
  torch::Tensor Activate(const torch::Tensor& logits) const;
  // Sequence targets: greedy tokens [L, B, To].
  torch::Tensor Greedy(const SourceBatch& x);

  // Pieces of the decoder for ensembles that decode several links together.
  DecoderState Encode(const SourceBatch& x);
  torch::Tensor DecodeStep(const torch::Tensor& tokens, DecoderState* state);  // -> [L, B, Vout]

  // Per-link parameters with the link's own (unpadded) shapes.
  FlatParams ExportLink(int64_t l) const;
  Status ImportLink(int64_t l, const FlatParams& params);

  // Masks for the loss of the link's task: per link index into {single, multi, reg-mse,
  // reg-l1} (vector targets).
  torch::Tensor out_mask_;    // [L, 1, Dout] float (vector targets)
  torch::Tensor vocab_bias_;  // [L, 1, Vout] float: 0 for real content/EOS ids, -1e9 otherwise

 private:
  struct Param {
    std::string name;
    torch::Tensor tensor;                           // [L, ...]
    std::vector<std::vector<int64_t>> true_shapes;  // per link, without the L dim
  };
  // Registers a zero tensor of shape [L, padded...] and fills each link's true region.
  torch::Tensor Add(const std::string& name, std::vector<int64_t> padded,
                    std::vector<std::vector<int64_t>> true_shapes, const std::vector<double>& bounds,
                    bool normal = false);
  std::vector<torch::Generator> init_gens_;  // per-link initialisation generators (may be empty)
  torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) const;
  torch::Tensor Embed(const torch::Tensor& tokens, const torch::Tensor& table) const;
  // Runs an LSTM over x [L, B, T, In] with mask [L, B, T] (undefined: every step is real);
  // returns outputs [L, B, T, H] and updates (h, c) to the last real step.
  torch::Tensor RunLstm(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& wx,
                        const torch::Tensor& wh, const torch::Tensor& b, torch::Tensor* h,
                        torch::Tensor* c) const;
  torch::Tensor Attend(const torch::Tensor& out, const DecoderState& st) const;  // -> logits
  torch::Tensor Mlp(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                    const torch::Tensor& w2, const torch::Tensor& b2, torch::Tensor* hidden = nullptr);

  std::vector<LinkSpec> specs_;
  Arch arch_;
  int64_t din_ = 0, vin_ = 0, hidden_ = 0, dout_ = 0, vout_ = 0, embed_ = 0, lstm_ = 0, out_len_ = 0;
  double dropout_ = 0;
  bool all_single_full_ = false;  // every link single-label with the group's full output width
  std::vector<Param> params_;
  torch::Tensor task_index_;  // [L] long: 0 soft-CE, 1 BCE, 2 MSE, 3 L1
  // Encoder / head weights (some undefined depending on arch).
  torch::Tensor w1_, b1_, w2_, b2_;                    // MLP (vec2vec, seq2vec head, vec2seq encoder)
  torch::Tensor enc_embed_, enc_wx_, enc_wh_, enc_b_;  // sequence encoder
  torch::Tensor dec_embed_, dec_wx_, dec_wh_, dec_b_, dec_wch_, dec_wcc_, dec_bc_, dec_wo_, dec_bo_;
};
TORCH_MODULE(StackedLink);

// Packing plain columns into padded tensors for a group (inputs[l] feeds link l).
// With `borrow`, vector inputs that every link shares (one Column, same width) are not copied:
// the batch is a [L, n, Din] broadcast view of the column's memory, valid while it lives.
Result<SourceBatch> PackSources(const std::vector<LinkSpec>& specs, const std::vector<const Column*>& inputs,
                                int64_t din, int64_t tin, bool borrow = false);
Result<TargetBatch> PackTargets(const std::vector<LinkSpec>& specs, const std::vector<const Column*>& targets,
                                int64_t dout, int64_t to);
// Unpacks link l's rows back into a column of its own target format.
Column UnpackVector(const torch::Tensor& activated, int64_t l, int dim);
Column UnpackTokens(const torch::Tensor& tokens, int64_t l);

}  // namespace mlink::link::internal
