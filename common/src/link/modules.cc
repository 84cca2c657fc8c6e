#include "link/modules.h"

#include <algorithm>
#include <cmath>

namespace mlink::link::internal {

namespace {
constexpr double kNegInf = -1e9;
}  // namespace

Arch ArchOf(const LinkSpec& s) {
  bool src_seq = s.source.kind == FormatKind::kSequence;
  bool tgt_seq = s.target.kind == FormatKind::kSequence;
  if (src_seq) return tgt_seq ? Arch::kSeq2Seq : Arch::kSeq2Vec;
  return tgt_seq ? Arch::kVec2Seq : Arch::kVec2Vec;
}

bool SameArch(const LinkSpec& a, const LinkSpec& b) { return ArchOf(a) == ArchOf(b); }

SourceBatch SourceBatch::Rows(const torch::Tensor& idx) const {
  SourceBatch out;
  if (vec.defined()) out.vec = vec.index_select(1, idx);
  if (tokens.defined()) {
    out.tokens = tokens.index_select(1, idx);
    out.mask = mask.index_select(1, idx);
  }
  return out;
}

SourceBatch SourceBatch::Slice(int64_t start, int64_t len) const {
  SourceBatch out;
  if (vec.defined()) out.vec = vec.narrow(1, start, len);
  if (tokens.defined()) {
    out.tokens = tokens.narrow(1, start, len);
    out.mask = mask.narrow(1, start, len);
  }
  return out;
}

SourceBatch SourceBatch::To(const torch::Device& d) const {
  SourceBatch out;
  if (vec.defined()) out.vec = vec.to(d);
  if (tokens.defined()) {
    out.tokens = tokens.to(d);
    out.mask = mask.to(d);
  }
  return out;
}

TargetBatch TargetBatch::Rows(const torch::Tensor& idx) const {
  TargetBatch out;
  if (vec.defined()) out.vec = vec.index_select(1, idx);
  if (tokens.defined()) out.tokens = tokens.index_select(1, idx);
  return out;
}

TargetBatch TargetBatch::To(const torch::Device& d) const {
  TargetBatch out;
  if (vec.defined()) out.vec = vec.to(d);
  if (tokens.defined()) out.tokens = tokens.to(d);
  return out;
}

StackedLinkImpl::StackedLinkImpl(std::vector<LinkSpec> specs, std::vector<uint64_t> seeds)
    : specs_(std::move(specs)) {
  arch_ = ArchOf(specs_.at(0));
  const int64_t L = num_links();
  TORCH_CHECK(seeds.empty() || static_cast<int64_t>(seeds.size()) == L, "one seed per link expected");
  for (uint64_t seed : seeds) init_gens_.push_back(at::detail::createCPUGenerator(seed));
  for (const auto& s : specs_) {
    din_ = std::max<int64_t>(din_, s.source.dim);
    vin_ = std::max<int64_t>(vin_, s.source.vocab);
    hidden_ = std::max<int64_t>(hidden_, s.HiddenUnits());
    dout_ = std::max<int64_t>(dout_, s.target.dim);
    vout_ = std::max<int64_t>(vout_, s.target.vocab);
    embed_ = std::max<int64_t>(embed_, s.embed_dim);
    lstm_ = std::max<int64_t>(lstm_, s.lstm_hidden);
    out_len_ = std::max<int64_t>(out_len_, seq_target() ? s.target.max_len + 1 : s.target.dim);
  }
  dropout_ = specs_[0].dropout;

  auto per = [&](auto fn) {
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& s : specs_) shapes.push_back(fn(s));
    return shapes;
  };
  auto bounds = [&](auto fn) {
    std::vector<double> b;
    for (const auto& s : specs_) b.push_back(1.0 / std::sqrt(static_cast<double>(fn(s))));
    return b;
  };
  auto H = [](const LinkSpec& s) -> int64_t { return s.HiddenUnits(); };
  auto Hl = [](const LinkSpec& s) -> int64_t { return s.lstm_hidden; };
  auto E = [](const LinkSpec& s) -> int64_t { return s.embed_dim; };
  auto Din = [](const LinkSpec& s) -> int64_t { return s.source.dim; };
  auto Dout = [](const LinkSpec& s) -> int64_t { return s.target.dim; };
  auto Vin = [](const LinkSpec& s) -> int64_t { return s.source.vocab; };
  auto Vout = [](const LinkSpec& s) -> int64_t { return s.target.vocab; };

  auto add_lstm = [&](const std::string& prefix, torch::Tensor* embed, torch::Tensor* wx,
                      torch::Tensor* wh, torch::Tensor* b, bool decoder) {
    auto V = decoder ? Vout : Vin;
    int64_t vpad = decoder ? vout_ : vin_;
    *embed = Add(prefix + "embed", {vpad, embed_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{V(s), E(s)}; }), {}, true);
    *wx = Add(prefix + "wx", {embed_, 4, lstm_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{E(s), 4, Hl(s)}; }), bounds(Hl));
    *wh = Add(prefix + "wh", {lstm_, 4, lstm_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{Hl(s), 4, Hl(s)}; }), bounds(Hl));
    *b = Add(prefix + "b", {1, 4, lstm_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{1, 4, Hl(s)}; }), bounds(Hl));
  };

  switch (arch_) {
    case Arch::kVec2Vec:
      w1_ = Add("mlp_w1", {din_, hidden_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{Din(s), H(s)}; }), bounds(Din));
      b1_ = Add("mlp_b1", {1, hidden_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{1, H(s)}; }), bounds(Din));
      w2_ = Add("mlp_w2", {hidden_, dout_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{H(s), Dout(s)}; }), bounds(H));
      b2_ = Add("mlp_b2", {1, dout_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{1, Dout(s)}; }), bounds(H));
      break;
    case Arch::kSeq2Vec:
      add_lstm("enc_", &enc_embed_, &enc_wx_, &enc_wh_, &enc_b_, false);
      w1_ = Add("mlp_w1", {lstm_, hidden_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{Hl(s), H(s)}; }), bounds(Hl));
      b1_ = Add("mlp_b1", {1, hidden_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{1, H(s)}; }), bounds(Hl));
      w2_ = Add("mlp_w2", {hidden_, dout_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{H(s), Dout(s)}; }), bounds(H));
      b2_ = Add("mlp_b2", {1, dout_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{1, Dout(s)}; }), bounds(H));
      break;
    case Arch::kVec2Seq:
      w1_ = Add("enc_w1", {din_, hidden_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{Din(s), H(s)}; }), bounds(Din));
      b1_ = Add("enc_b1", {1, hidden_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{1, H(s)}; }), bounds(Din));
      w2_ = Add("enc_w2", {hidden_, lstm_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{H(s), Hl(s)}; }), bounds(H));
      b2_ = Add("enc_b2", {1, lstm_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{1, Hl(s)}; }), bounds(H));
      break;
    case Arch::kSeq2Seq:
      add_lstm("enc_", &enc_embed_, &enc_wx_, &enc_wh_, &enc_b_, false);
      break;
  }
  if (seq_target()) {
    add_lstm("dec_", &dec_embed_, &dec_wx_, &dec_wh_, &dec_b_, true);
    auto hh = per([&](const LinkSpec& s) { return std::vector<int64_t>{Hl(s), Hl(s)}; });
    dec_wch_ = Add("dec_wch", {lstm_, lstm_}, hh, bounds(Hl));
    dec_wcc_ = Add("dec_wcc", {lstm_, lstm_}, hh, bounds(Hl));
    dec_bc_ = Add("dec_bc", {1, lstm_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{1, Hl(s)}; }), bounds(Hl));
    dec_wo_ = Add("dec_wo", {lstm_, vout_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{Hl(s), Vout(s)}; }), bounds(Hl));
    dec_bo_ = Add("dec_bo", {1, vout_}, per([&](const LinkSpec& s) { return std::vector<int64_t>{1, Vout(s)}; }), bounds(Hl));
  }

  // Masks and per-link task selection (buffers, not parameters).
  torch::NoGradGuard no_grad;
  if (seq_target()) {
    vocab_bias_ = torch::full({L, 1, vout_}, kNegInf);
    for (int64_t l = 0; l < L; ++l) {
      vocab_bias_[l][0].narrow(0, kEosToken, specs_[l].target.vocab - kEosToken).fill_(0);
    }
    register_buffer("vocab_bias", vocab_bias_);
  } else {
    out_mask_ = torch::zeros({L, 1, dout_});
    std::vector<int64_t> task(L);
    for (int64_t l = 0; l < L; ++l) {
      out_mask_[l][0].narrow(0, 0, specs_[l].target.dim).fill_(1);
      switch (specs_[l].task) {
        case TaskKind::kSingleLabel: task[l] = 0; break;
        case TaskKind::kMultiLabel: task[l] = 1; break;
        default: task[l] = specs_[l].regression_loss == RegressionLoss::kL1 ? 3 : 2;
      }
    }
    register_buffer("out_mask", out_mask_);
    all_single_full_ = true;
    for (int64_t l = 0; l < L; ++l) {
      all_single_full_ = all_single_full_ && specs_[l].task == TaskKind::kSingleLabel && specs_[l].target.dim == dout_;
    }
    task_index_ = torch::tensor(task, torch::kLong);
    register_buffer("task_index", task_index_);
  }
  init_gens_.clear();
}

torch::Tensor StackedLinkImpl::Add(const std::string& name, std::vector<int64_t> padded,
                                   std::vector<std::vector<int64_t>> true_shapes,
                                   const std::vector<double>& bounds, bool normal) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> full = {num_links()};
  full.insert(full.end(), padded.begin(), padded.end());
  torch::Tensor t = torch::zeros(full);
  for (int64_t l = 0; l < num_links(); ++l) {
    torch::Tensor region = t[l];
    for (std::size_t d = 0; d < true_shapes[l].size(); ++d) region = region.narrow(d, 0, true_shapes[l][d]);
    c10::optional<torch::Generator> gen;
    if (!init_gens_.empty()) gen = init_gens_[l];
    if (normal) {
      region.normal_(0, 1, gen);
    } else {
      region.uniform_(-bounds[l], bounds[l], gen);
    }
  }
  t = register_parameter(name, t);
  params_.push_back({name, t, std::move(true_shapes)});
  return t;
}

torch::Tensor StackedLinkImpl::Linear(const torch::Tensor& x, const torch::Tensor& w,
                                      const torch::Tensor& b) const {
  const int64_t L = x.size(0);
  const int64_t in = w.size(1);
  if (x.dim() == 3 && L > 1 && x.stride(0) == 0) {
    // Every link reads the same rows (a broadcast view): one large GEMM against all links'
    // weights side by side, instead of L small ones over copies of the input.
    const int64_t out = w.numel() / (L * in);
    auto wcat = w.reshape({L, in, out}).permute({1, 0, 2}).reshape({in, L * out});
    auto y = b.defined() ? torch::addmm(b.reshape({1, L * out}), x[0], wcat) : torch::mm(x[0], wcat);
    return y.view({x.size(1), L, out}).permute({1, 0, 2});
  }
  auto w3 = w.reshape({L, in, -1});
  auto sizes = x.sizes().vec();
  auto x3 = x.reshape({L, -1, in});
  torch::Tensor y = b.defined() ? torch::baddbmm(b.reshape({L, 1, -1}), x3, w3) : torch::bmm(x3, w3);
  sizes.back() = w3.size(2);
  return y.reshape(sizes);
}

torch::Tensor StackedLinkImpl::Embed(const torch::Tensor& tokens, const torch::Tensor& table) const {
  const int64_t L = table.size(0), V = table.size(1), E = table.size(2);
  auto offsets = (torch::arange(L, tokens.options()) * V).view({L, 1, 1});
  auto idx = (tokens + offsets).reshape({-1});
  auto sizes = tokens.sizes().vec();
  sizes.push_back(E);
  return table.reshape({L * V, E}).index_select(0, idx).reshape(sizes);
}

torch::Tensor StackedLinkImpl::RunLstm(const torch::Tensor& x, const torch::Tensor& mask,
                                       const torch::Tensor& wx, const torch::Tensor& wh,
                                       const torch::Tensor& b, torch::Tensor* h, torch::Tensor* c) const {
  // Few kernels per step: the links are tiny, so each step's cost is mostly per-op overhead
  // (forward and autograd), not arithmetic.
  const int64_t L = x.size(0), T = x.size(2), Hd = wh.size(1);
  auto gx = Linear(x, wx, b);  // [L, B, T, 4H]
  auto whv = wh.reshape({L, Hd, 4 * Hd});
  std::vector<torch::Tensor> outs;
  outs.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    auto g = torch::baddbmm(gx.select(2, t), *h, whv);
    auto s = torch::sigmoid(g);  // i, f, o used; the g-gate slice is wasted, one kernel instead of three
    auto i = s.narrow(-1, 0, Hd), f = s.narrow(-1, Hd, Hd), o = s.narrow(-1, 3 * Hd, Hd);
    auto gg = torch::tanh(g.narrow(-1, 2 * Hd, Hd));
    auto c_new = torch::addcmul(f * *c, i, gg);
    auto h_new = o * torch::tanh(c_new);
    if (!mask.defined()) {  // every step real (decoders)
      *h = h_new;
      *c = c_new;
      outs.push_back(h_new);
      continue;
    }
    auto m = mask.select(2, t).unsqueeze(-1);
    *h = torch::where(m, h_new, *h);
    *c = torch::where(m, c_new, *c);
    outs.push_back(h_new * m);
  }
  return T == 1 ? outs[0].unsqueeze(2) : torch::stack(outs, 2);
}

torch::Tensor StackedLinkImpl::Mlp(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& b1,
                                   const torch::Tensor& w2, const torch::Tensor& b2, torch::Tensor* hidden) {
  auto h = torch::relu(Linear(x, w1, b1));
  if (hidden) *hidden = h;
  if (dropout_ > 0 && is_training()) h = torch::dropout(h, dropout_, true);
  return Linear(h, w2, b2);
}

torch::Tensor StackedLinkImpl::Attend(const torch::Tensor& out, const DecoderState& st) const {
  // Luong dot attention over the encoder memory, then a combined layer and the vocabulary.
  auto scores = torch::matmul(out, st.mem.transpose(-1, -2));  // [L, B, T, S]
  scores = scores.masked_fill(st.mem_mask.logical_not().unsqueeze(2), kNegInf);
  auto ctx = torch::matmul(torch::softmax(scores, -1), st.mem);  // [L, B, T, H]
  auto comb = torch::tanh(Linear(out, dec_wch_, dec_bc_) + Linear(ctx, dec_wcc_, torch::Tensor()));
  return Linear(comb, dec_wo_, dec_bo_) + vocab_bias_.unsqueeze(1);
}

DecoderState StackedLinkImpl::Encode(const SourceBatch& x) {
  DecoderState st;
  if (arch_ == Arch::kVec2Seq) {
    auto e = torch::tanh(Mlp(x.vec, w1_, b1_, w2_, b2_));  // [L, B, Hl]
    st.h = e;
    st.c = torch::zeros_like(e);
    st.mem = e.unsqueeze(2);
    st.mem_mask = torch::ones({e.size(0), e.size(1), 1}, e.options().dtype(torch::kBool));
  } else {
    auto emb = Embed(x.tokens, enc_embed_);
    const int64_t L = emb.size(0), B = emb.size(1);
    st.h = torch::zeros({L, B, lstm_}, emb.options());
    st.c = torch::zeros({L, B, lstm_}, emb.options());
    st.mem = RunLstm(emb, x.mask, enc_wx_, enc_wh_, enc_b_, &st.h, &st.c);
    st.mem_mask = x.mask;
  }
  return st;
}

torch::Tensor StackedLinkImpl::DecodeStep(const torch::Tensor& tokens, DecoderState* st) {
  auto emb = Embed(tokens.unsqueeze(2), dec_embed_);  // [L, B, 1, E]
  auto out = RunLstm(emb, torch::Tensor(), dec_wx_, dec_wh_, dec_b_, &st->h, &st->c);
  return Attend(out, *st).squeeze(2);
}

torch::Tensor StackedLinkImpl::Forward(const SourceBatch& x, const TargetBatch* y, torch::Tensor* hidden) {
  switch (arch_) {
    case Arch::kVec2Vec:
      return Mlp(x.vec, w1_, b1_, w2_, b2_, hidden);
    case Arch::kSeq2Vec: {
      auto emb = Embed(x.tokens, enc_embed_);
      const int64_t L = emb.size(0), B = emb.size(1);
      auto h = torch::zeros({L, B, lstm_}, emb.options());
      auto c = torch::zeros({L, B, lstm_}, emb.options());
      RunLstm(emb, x.mask, enc_wx_, enc_wh_, enc_b_, &h, &c);
      return Mlp(h, w1_, b1_, w2_, b2_, hidden);
    }
    case Arch::kVec2Seq:
    case Arch::kSeq2Seq: {
      DecoderState st = Encode(x);
      if (hidden) *hidden = st.h;  // the encoding of the source
      const auto& tgt = y->tokens;  // [L, B, To]
      auto bos = torch::full({tgt.size(0), tgt.size(1), 1}, kBosToken, tgt.options());
      auto dec_in = torch::cat({bos, tgt.narrow(2, 0, tgt.size(2) - 1)}, 2);
      auto emb = Embed(dec_in, dec_embed_);
      auto out = RunLstm(emb, torch::Tensor(), dec_wx_, dec_wh_, dec_b_, &st.h, &st.c);
      return Attend(out, st);
    }
  }
  return {};
}

torch::Tensor StackedLinkImpl::Loss(const torch::Tensor& logits, const TargetBatch& y) const {
  if (seq_target()) {
    auto lsm = torch::log_softmax(logits, -1);
    auto nll = -lsm.gather(-1, y.tokens.unsqueeze(-1)).squeeze(-1);  // [L, B, To]
    auto mask = (y.tokens != kPadToken).to(logits.dtype());
    return (nll * mask).sum({1, 2}) / mask.sum({1, 2}).clamp_min(1);
  }
  const auto& m = out_mask_;
  auto dl = m.sum(-1);  // [L, 1]
  auto loss = torch::zeros({num_links()}, logits.options());
  auto task = task_index_;
  auto select = [&](int64_t kind, const std::function<torch::Tensor()>& fn) {
    auto is = task == kind;
    if (is.any().item<bool>()) loss = torch::where(is, fn(), loss);
  };
  select(0, [&] {
    auto lsm = torch::log_softmax(logits + (1 - m) * kNegInf, -1);
    return -(y.vec * lsm * m).sum(-1).mean(1);
  });
  select(1, [&] {
    auto bce = torch::binary_cross_entropy_with_logits(logits, y.vec, {}, {}, at::Reduction::None);
    return ((bce * m).sum(-1) / dl).mean(1);
  });
  select(2, [&] { return (((logits - y.vec).pow(2) * m).sum(-1) / dl).mean(1); });
  select(3, [&] { return (((logits - y.vec).abs() * m).sum(-1) / dl).mean(1); });
  return loss;
}

torch::Tensor StackedLinkImpl::RowLoss(const torch::Tensor& logits, const TargetBatch& y) const {
  if (seq_target()) {
    auto lsm = torch::log_softmax(logits, -1);
    auto nll = -lsm.gather(-1, y.tokens.unsqueeze(-1)).squeeze(-1);  // [L, B, To]
    auto mask = (y.tokens != kPadToken).to(logits.dtype());
    return (nll * mask).sum(2) / mask.sum(2).clamp_min(1);
  }
  const auto& m = out_mask_;
  auto dl = m.sum(-1);  // [L, 1]
  auto single = [&] { return -(y.vec * torch::log_softmax(logits + (1 - m) * kNegInf, -1) * m).sum(-1); };
  auto multi = [&] {
    auto bce = torch::binary_cross_entropy_with_logits(logits, y.vec, {}, {}, at::Reduction::None);
    return (bce * m).sum(-1) / dl;
  };
  auto mse = [&] { return ((logits - y.vec).pow(2) * m).sum(-1) / dl; };
  auto l1 = [&] { return ((logits - y.vec).abs() * m).sum(-1) / dl; };
  const std::vector<std::function<torch::Tensor()>> kinds = {single, multi, mse, l1};
  auto loss = torch::zeros({num_links(), logits.size(1)}, logits.options());
  for (int64_t kind = 0; kind < 4; ++kind) {
    auto is = (task_index_ == kind).unsqueeze(1);  // [L, 1]
    if (is.any().item<bool>()) loss = torch::where(is, kinds[kind](), loss);
  }
  return loss;
}

torch::Tensor StackedLinkImpl::Activate(const torch::Tensor& logits) const {
  if (all_single_full_) {
    // Every link is single-label at full width: one softmax, taken across the (short) class
    // axis laid out as the middle dimension so the kernel runs along the long row axis.
    return torch::softmax(logits.transpose(1, 2).contiguous(), 1).transpose(1, 2);
  }
  const auto& m = out_mask_;
  auto out = logits * m;
  auto task = task_index_.view({-1, 1, 1});
  if ((task_index_ == 0).any().item<bool>()) {
    out = torch::where(task == 0, torch::softmax(logits + (1 - m) * kNegInf, -1) * m, out);
  }
  if ((task_index_ == 1).any().item<bool>()) out = torch::where(task == 1, torch::sigmoid(logits) * m, out);
  return out;
}

torch::Tensor StackedLinkImpl::Greedy(const SourceBatch& x) {
  DecoderState st = Encode(x);
  const int64_t L = st.h.size(0), B = st.h.size(1);
  auto tok = torch::full({L, B}, kBosToken, torch::TensorOptions().dtype(torch::kLong).device(st.h.device()));
  std::vector<torch::Tensor> out;
  for (int64_t t = 0; t < out_len_; ++t) {
    tok = DecodeStep(tok, &st).argmax(-1);
    out.push_back(tok);
  }
  return torch::stack(out, 2);
}

FlatParams StackedLinkImpl::ExportLink(int64_t l) const {
  torch::NoGradGuard no_grad;
  FlatParams fp;
  for (const auto& p : params_) {
    torch::Tensor region = p.tensor[l];
    for (std::size_t d = 0; d < p.true_shapes[l].size(); ++d) region = region.narrow(d, 0, p.true_shapes[l][d]);
    region = region.contiguous().to(torch::kCPU, torch::kFloat);
    fp.names.push_back(p.name);
    fp.shapes.push_back(p.true_shapes[l]);
    const float* data = region.data_ptr<float>();
    fp.data.insert(fp.data.end(), data, data + region.numel());
  }
  return fp;
}

Status StackedLinkImpl::ImportLink(int64_t l, const FlatParams& fp) {
  MLINK_RETURN_IF_ERROR(fp.Validate());
  if (fp.names.size() != params_.size()) {
    return Status::InvalidArgument("link parameters: expected " + std::to_string(params_.size()) +
                                   " tensors, got " + std::to_string(fp.names.size()));
  }
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (fp.names[i] != params_[i].name || fp.shapes[i] != params_[i].true_shapes[l]) {
      return Status::InvalidArgument("link parameters: tensor " + std::to_string(i) + " is '" + fp.names[i] +
                                     "' with another shape than this link's '" + params_[i].name + "'");
    }
  }
  torch::NoGradGuard no_grad;
  std::size_t offset = 0;
  for (const auto& p : params_) {
    torch::Tensor slot = p.tensor[l];
    slot.zero_();
    torch::Tensor region = slot;
    for (std::size_t d = 0; d < p.true_shapes[l].size(); ++d) region = region.narrow(d, 0, p.true_shapes[l][d]);
    auto src = torch::from_blob(const_cast<float*>(fp.data.data() + offset), p.true_shapes[l], torch::kFloat);
    region.copy_(src);
    offset += static_cast<std::size_t>(src.numel());
  }
  return Status::Ok();
}

// ------------------------------------------------------------------------------- packing

Result<SourceBatch> PackSources(const std::vector<LinkSpec>& specs, const std::vector<const Column*>& inputs,
                                int64_t din, int64_t tin, bool borrow) {
  const int64_t L = static_cast<int64_t>(specs.size());
  if (inputs.size() != specs.size()) return Status::InvalidArgument("one input column per link expected");
  const int64_t n = static_cast<int64_t>(inputs[0]->rows());
  SourceBatch out;
  for (int64_t l = 0; l < L; ++l) {
    MLINK_RETURN_IF_ERROR(inputs[l]->Check(specs[l].source, "link source"));
    if (static_cast<int64_t>(inputs[l]->rows()) != n) return Status::InvalidArgument("input columns differ in row count");
  }
  bool shared = borrow && specs[0].source.kind == FormatKind::kVector && n > 0;
  for (int64_t l = 0; shared && l < L; ++l) shared = inputs[l] == inputs[0] && inputs[l]->dim == din;
  if (shared) {
    auto view = torch::from_blob(const_cast<float*>(inputs[0]->values.data()), {1, n, din}, torch::kFloat);
    out.vec = view.expand({L, n, din});
    return out;
  }
  if (specs[0].source.kind == FormatKind::kVector) {
    out.vec = torch::zeros({L, n, din});
    for (int64_t l = 0; l < L; ++l) {
      const int d = inputs[l]->dim;
      if (n == 0) continue;
      auto src = torch::from_blob(const_cast<float*>(inputs[l]->values.data()), {n, d}, torch::kFloat);
      out.vec[l].narrow(1, 0, d).copy_(src);
    }
  } else {
    std::vector<int64_t> tok(static_cast<std::size_t>(L * n * tin), kPadToken);
    std::vector<uint8_t> mask(tok.size(), 0);
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t r = 0; r < n; ++r) {
        const auto& s = inputs[l]->seqs[r];
        std::size_t base = static_cast<std::size_t>((l * n + r) * tin);
        int64_t len = std::min<int64_t>(static_cast<int64_t>(s.size()), tin - 1);
        for (int64_t t = 0; t < len; ++t) {
          tok[base + t] = s[t];
          mask[base + t] = 1;
        }
        tok[base + len] = kEosToken;  // every source sequence ends with EOS, so none is empty
        mask[base + len] = 1;
      }
    }
    out.tokens = torch::from_blob(tok.data(), {L, n, tin}, torch::kLong).clone();
    out.mask = torch::from_blob(mask.data(), {L, n, tin}, torch::kUInt8).to(torch::kBool);
  }
  return out;
}

Result<TargetBatch> PackTargets(const std::vector<LinkSpec>& specs, const std::vector<const Column*>& targets,
                                int64_t dout, int64_t to) {
  const int64_t L = static_cast<int64_t>(specs.size());
  const int64_t n = static_cast<int64_t>(targets[0]->rows());
  TargetBatch out;
  for (int64_t l = 0; l < L; ++l) {
    MLINK_RETURN_IF_ERROR(targets[l]->Check(specs[l].target, "link target"));
    if (static_cast<int64_t>(targets[l]->rows()) != n) return Status::InvalidArgument("target columns differ in row count");
  }
  if (specs[0].target.kind == FormatKind::kVector) {
    out.vec = torch::zeros({L, n, dout});
    for (int64_t l = 0; l < L; ++l) {
      const int d = targets[l]->dim;
      if (n == 0) continue;
      auto src = torch::from_blob(const_cast<float*>(targets[l]->values.data()), {n, d}, torch::kFloat);
      out.vec[l].narrow(1, 0, d).copy_(src);
    }
  } else {
    std::vector<int64_t> tok(static_cast<std::size_t>(L * n * to), kPadToken);
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t r = 0; r < n; ++r) {
        const auto& s = targets[l]->seqs[r];
        std::size_t base = static_cast<std::size_t>((l * n + r) * to);
        for (std::size_t t = 0; t < s.size(); ++t) tok[base + t] = s[t];
        tok[base + s.size()] = kEosToken;
      }
    }
    out.tokens = torch::from_blob(tok.data(), {L, n, to}, torch::kLong).clone();
  }
  return out;
}

Column UnpackVector(const torch::Tensor& activated, int64_t l, int dim) {
  auto t = activated[l].narrow(1, 0, dim).contiguous().to(torch::kCPU, torch::kFloat);
  const float* p = t.data_ptr<float>();
  return Column::Vectors(dim, std::vector<float>(p, p + t.numel()));
}

Column UnpackTokens(const torch::Tensor& tokens, int64_t l) {
  auto t = tokens[l].contiguous().to(torch::kCPU, torch::kLong);
  const int64_t n = t.size(0), T = t.size(1);
  const int64_t* p = t.data_ptr<int64_t>();
  std::vector<std::vector<int32_t>> seqs(static_cast<std::size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t k = 0; k < T; ++k) {
      int64_t v = p[r * T + k];
      if (v == kEosToken || v == kPadToken) break;
      seqs[r].push_back(static_cast<int32_t>(v));
    }
  }
  return Column::Sequences(std::move(seqs));
}

}  // namespace mlink::link::internal
