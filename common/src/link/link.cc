#include "mlink/link/link.h"

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include <fstream>
#include <mutex>
#include <random>
#include <sstream>

#include "link/link_impl.h"
#include "link/modules.h"
#include "link/trainer.h"

namespace mlink::link {

using internal::StackedLink;

namespace {

constexpr char kLinkMagic[] = "MLINK-LINK";
constexpr char kEnsembleMagic[] = "MLINK-ENSEMBLE";
constexpr uint32_t kFormatVersion = 1;

template <class Archive>
void SaveSpec(Archive& ar, const LinkSpec& s) {
  ar(static_cast<int32_t>(s.source.kind), s.source.dim, s.source.vocab, s.source.max_len);
  ar(static_cast<int32_t>(s.target.kind), s.target.dim, s.target.vocab, s.target.max_len);
  ar(static_cast<int32_t>(s.task), static_cast<int32_t>(s.regression_loss), s.hidden, s.dropout, s.embed_dim,
     s.lstm_hidden);
}

template <class Archive>
LinkSpec LoadSpec(Archive& ar) {
  LinkSpec s;
  int32_t sk, tk, task, loss;
  ar(sk, s.source.dim, s.source.vocab, s.source.max_len);
  ar(tk, s.target.dim, s.target.vocab, s.target.max_len);
  ar(task, loss, s.hidden, s.dropout, s.embed_dim, s.lstm_hidden);
  s.source.kind = sk == 1 ? FormatKind::kSequence : FormatKind::kVector;
  s.target.kind = tk == 1 ? FormatKind::kSequence : FormatKind::kVector;
  if (task < 0 || task > static_cast<int32_t>(TaskKind::kSequence)) throw std::runtime_error("unknown task kind");
  s.task = static_cast<TaskKind>(task);
  s.regression_loss = loss == 1 ? RegressionLoss::kL1 : RegressionLoss::kMse;
  return s;
}

template <class Archive>
void SaveParams(Archive& ar, const FlatParams& p) {
  ar(p.names, p.shapes, p.data, static_cast<uint64_t>(p.Checksum()));
}

template <class Archive>
FlatParams LoadParams(Archive& ar) {
  FlatParams p;
  uint64_t checksum = 0;
  ar(p.names, p.shapes, p.data, checksum);
  if (checksum != p.Checksum()) throw std::runtime_error("parameter checksum mismatch (corrupt data)");
  return p;
}

Status WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::PermissionDenied("cannot write " + tmp);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) return Status::OutOfRange("writing " + tmp + " failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Status::PermissionDenied("cannot rename " + tmp + " to " + path);
  return Status::Ok();
}

Result<std::vector<uint8_t>> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + path);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Applies a task's activation to combined pre-activation outputs [n, D].
torch::Tensor ActivateTask(TaskKind task, const torch::Tensor& z) {
  if (task == TaskKind::kSingleLabel) return torch::softmax(z, -1);
  if (task == TaskKind::kMultiLabel) return torch::sigmoid(z);
  return z;
}

// Mean loss of combined outputs for a task; z [B, D] (vector) or [B, To, V] (sequence).
torch::Tensor TaskLoss(const LinkSpec& spec, const torch::Tensor& z, const torch::Tensor& y) {
  switch (spec.task) {
    case TaskKind::kSingleLabel: return -(y * torch::log_softmax(z, -1)).sum(-1).mean();
    case TaskKind::kMultiLabel: return torch::binary_cross_entropy_with_logits(z, y);
    case TaskKind::kSequence: {
      auto nll = -torch::log_softmax(z, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
      auto mask = (y != kPadToken).to(z.dtype());
      return (nll * mask).sum() / mask.sum().clamp_min(1);
    }
    default:
      return spec.regression_loss == RegressionLoss::kL1 ? (z - y).abs().mean() : (z - y).pow(2).mean();
  }
}

}  // namespace

Link::Link(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Link::~Link() = default;

Result<std::unique_ptr<Link>> Link::Create(const LinkSpec& spec, uint64_t seed, Device device) {
  MLINK_RETURN_IF_ERROR(spec.Validate());
  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  impl->device = device;
  try {
    std::lock_guard<std::mutex> lock(internal::InitMutex());
    torch::manual_seed(seed);
    impl->module = StackedLink(std::vector<LinkSpec>{spec});
    impl->module->to(impl->torch_device());
    impl->module->eval();
  } catch (const std::exception& e) {
    return Status::Internal(std::string("creating link ") + spec.Canonical() + ": " + e.what());
  }
  return std::unique_ptr<Link>(new Link(std::move(impl)));
}

const LinkSpec& Link::spec() const { return impl_->spec; }

std::unique_ptr<Link> Link::Clone() const {
  auto copy = Create(impl_->spec, 1, impl_->device);
  (void)(*copy)->SetParams(GetParams());
  return std::move(copy).value();
}

Result<Column> Link::Predict(const Column& source) const {
  MLINK_ASSIGN_OR_RETURN(auto x, impl_->Pack(source));
  try {
    auto out = internal::PredictStacked(impl_->module, x, impl_->torch_device());
    return internal::UnpackPrediction(impl_->module, out, 0);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("link prediction failed: ") + e.what());
  }
}

Result<Column> Link::Logits(const Column& source) const {
  if (impl_->spec.target.kind != FormatKind::kVector) {
    return Status::FailedPrecondition("Logits() is for vector targets; sequence links decode with Predict()");
  }
  MLINK_ASSIGN_OR_RETURN(auto x, impl_->Pack(source));
  try {
    torch::NoGradGuard no_grad;
    impl_->module->eval();
    auto z = impl_->module->Forward(x.To(impl_->torch_device()), nullptr);
    return internal::UnpackVector(z, 0, impl_->spec.target.dim);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("link forward failed: ") + e.what());
  }
}

Result<TrainReport> Link::Train(const Column& source, const Column& target, const TrainOptions& options) {
  if (source.rows() != target.rows()) {
    return Status::InvalidArgument("link training: " + std::to_string(source.rows()) + " source rows but " +
                                   std::to_string(target.rows()) + " target rows");
  }
  MLINK_ASSIGN_OR_RETURN(auto x, impl_->Pack(source));
  MLINK_ASSIGN_OR_RETURN(auto y, internal::PackTargets({impl_->spec}, {&target}, impl_->spec.target.dim,
                                                       impl_->spec.target.max_len + 1));
  try {
    torch::manual_seed(options.seed);  // dropout masks
    MLINK_ASSIGN_OR_RETURN(auto reports, internal::TrainStacked(impl_->module, x, y, {&target}, options,
                                                                impl_->torch_device()));
    return reports[0];
  } catch (const std::exception& e) {
    return Status::Internal(std::string("link training failed: ") + e.what());
  }
}

Result<Evaluation> Link::Evaluate(const Column& source, const Column& target) const {
  MLINK_RETURN_IF_ERROR(target.Check(impl_->spec.target, "reference outputs"));
  MLINK_ASSIGN_OR_RETURN(Column pred, Predict(source));
  return link::Evaluate(impl_->spec.task, pred, target);
}

FlatParams Link::GetParams() const { return impl_->module->ExportLink(0); }

Status Link::SetParams(const FlatParams& params) {
  if (!params.AllFinite()) return Status::InvalidArgument("link parameters contain NaN or Inf");
  try {
    return impl_->module->ImportLink(0, params).WithContext("link " + impl_->spec.ArchName());
  } catch (const std::exception& e) {
    return Status::Internal(std::string("setting link parameters: ") + e.what());
  }
}

std::size_t Link::ParamCount() const { return GetParams().size(); }

std::vector<uint8_t> Link::Serialize() const {
  std::ostringstream os(std::ios::binary);
  {
    cereal::PortableBinaryOutputArchive ar(os);
    ar(std::string(kLinkMagic), kFormatVersion);
    SaveSpec(ar, impl_->spec);
    SaveParams(ar, GetParams());
  }
  std::string s = os.str();
  return std::vector<uint8_t>(s.begin(), s.end());
}

Result<std::unique_ptr<Link>> Link::Deserialize(const std::vector<uint8_t>& bytes, Device device) {
  LinkSpec spec;
  FlatParams params;
  try {
    std::istringstream is(std::string(bytes.begin(), bytes.end()), std::ios::binary);
    cereal::PortableBinaryInputArchive ar(is);
    std::string magic;
    uint32_t version = 0;
    ar(magic, version);
    if (magic != kLinkMagic) return Status::InvalidArgument("not a saved link (bad magic)");
    if (version != kFormatVersion) return Status::InvalidArgument("saved link has format version " + std::to_string(version) + ", this program reads " + std::to_string(kFormatVersion));
    spec = LoadSpec(ar);
    params = LoadParams(ar);
  } catch (const std::exception& e) {
    return Status::DataLoss(std::string("saved link is truncated or corrupt: ") + e.what());
  }
  MLINK_ASSIGN_OR_RETURN(auto link, Create(spec, 1, device));
  MLINK_RETURN_IF_ERROR(link->SetParams(params));
  return link;
}

Status Link::Save(const std::string& path) const { return WriteFile(path, Serialize()); }

Result<std::unique_ptr<Link>> Link::Load(const std::string& path, Device device) {
  MLINK_ASSIGN_OR_RETURN(auto bytes, ReadFile(path));
  auto link = Deserialize(bytes, device);
  if (!link.ok()) return link.status().WithContext(path);
  return link;
}

// ------------------------------------------------------------------------------ Ensemble

struct Ensemble::Impl {
  std::vector<std::unique_ptr<Link>> links;
  torch::Tensor raw;  // [S]; weights are softplus(raw), normalised over the present sources

  const LinkSpec& spec0() const { return links[0]->spec(); }

  torch::Tensor Weights(const std::vector<bool>& present) const {
    auto w = torch::softplus(raw.detach());
    auto mask = torch::ones_like(w);
    for (std::size_t i = 0; i < present.size() && i < links.size(); ++i) mask[i] = present[i] ? 1.0 : 0.0;
    w = w * mask;
    return w / w.sum().clamp_min(1e-12);
  }
};

Ensemble::Ensemble(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Ensemble::~Ensemble() = default;

Result<std::unique_ptr<Ensemble>> Ensemble::Create(std::vector<std::unique_ptr<Link>> links) {
  if (links.empty()) return Status::InvalidArgument("an ensemble needs at least one link");
  for (const auto& l : links) {
    if (!l) return Status::InvalidArgument("ensemble: null link");
    if (!(l->spec().target == links[0]->spec().target) || l->spec().task != links[0]->spec().task) {
      return Status::InvalidArgument("ensemble: every link must have the same target format and task; " +
                                     l->spec().Canonical() + " differs from " + links[0]->spec().Canonical());
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->links = std::move(links);
  // softplus(0.5413) = 1: every source starts with the same weight.
  impl->raw = torch::full({static_cast<int64_t>(impl->links.size())}, 0.5413);
  return std::unique_ptr<Ensemble>(new Ensemble(std::move(impl)));
}

std::size_t Ensemble::num_sources() const { return impl_->links.size(); }
const Link& Ensemble::link(std::size_t i) const { return *impl_->links.at(i); }

std::vector<double> Ensemble::Weights(const std::vector<bool>& present) const {
  auto w = impl_->Weights(present);
  std::vector<double> out;
  for (int64_t i = 0; i < w.size(0); ++i) out.push_back(w[i].item<double>());
  return out;
}

static Status CheckPresent(const std::vector<Column>& inputs, const std::vector<bool>& present, std::size_t s) {
  if (inputs.size() != s) return Status::InvalidArgument("ensemble: expected " + std::to_string(s) + " input columns, got " + std::to_string(inputs.size()));
  if (!present.empty() && present.size() != s) return Status::InvalidArgument("ensemble: present mask has the wrong length");
  bool any = present.empty();
  for (bool p : present) any = any || p;
  if (!any) return Status::InvalidArgument("ensemble: at least one source must be present");
  return Status::Ok();
}

Result<Column> Ensemble::Predict(const std::vector<Column>& inputs, const std::vector<bool>& present) const {
  MLINK_RETURN_IF_ERROR(CheckPresent(inputs, present, impl_->links.size()));
  const LinkSpec& spec = impl_->spec0();
  auto w = impl_->Weights(present);
  auto is_present = [&](std::size_t i) { return present.empty() || present[i]; };
  try {
    torch::NoGradGuard no_grad;
    if (spec.target.kind == FormatKind::kVector) {
      torch::Tensor z;
      for (std::size_t i = 0; i < impl_->links.size(); ++i) {
        if (!is_present(i)) continue;
        MLINK_ASSIGN_OR_RETURN(Column li, impl_->links[i]->Logits(inputs[i]));
        auto t = torch::from_blob(li.values.data(), {static_cast<int64_t>(li.rows()), li.dim}, torch::kFloat).clone();
        z = z.defined() ? z + w[i] * t : w[i] * t;
      }
      auto a = ActivateTask(spec.task, z).contiguous();
      return Column::Vectors(spec.target.dim, std::vector<float>(a.data_ptr<float>(), a.data_ptr<float>() + a.numel()));
    }
    // Sequence target: decode all present links together, one token at a time, combining their
    // weighted pre-activation outputs at each step.
    std::vector<internal::DecoderState> states(impl_->links.size());
    int64_t n = -1;
    for (std::size_t i = 0; i < impl_->links.size(); ++i) {
      if (!is_present(i)) continue;
      auto* li = impl_->links[i]->impl();
      MLINK_ASSIGN_OR_RETURN(auto x, li->Pack(inputs[i]));
      li->module->eval();
      states[i] = li->module->Encode(x);
      n = states[i].h.size(1);
    }
    auto tok = torch::full({1, n}, kBosToken, torch::kLong);
    std::vector<torch::Tensor> out;
    for (int t = 0; t <= spec.target.max_len; ++t) {
      torch::Tensor z;
      for (std::size_t i = 0; i < impl_->links.size(); ++i) {
        if (!is_present(i)) continue;
        auto zi = impl_->links[i]->impl()->module->DecodeStep(tok, &states[i]);
        z = z.defined() ? z + w[i] * zi : w[i] * zi;
      }
      tok = z.argmax(-1);
      out.push_back(tok);
    }
    Column c = internal::UnpackTokens(torch::stack(out, 2), 0);
    for (auto& s : c.seqs) {
      if (static_cast<int>(s.size()) > spec.target.max_len) s.resize(spec.target.max_len);
    }
    return c;
  } catch (const std::exception& e) {
    return Status::Internal(std::string("ensemble prediction failed: ") + e.what());
  }
}

Result<Evaluation> Ensemble::Evaluate(const std::vector<Column>& inputs, const Column& target,
                                      const std::vector<bool>& present) const {
  MLINK_RETURN_IF_ERROR(target.Check(impl_->spec0().target, "reference outputs"));
  MLINK_ASSIGN_OR_RETURN(Column pred, Predict(inputs, present));
  return link::Evaluate(impl_->spec0().task, pred, target);
}

Result<TrainReport> Ensemble::TrainWeights(const std::vector<Column>& inputs, const Column& target,
                                           const TrainOptions& o) {
  const std::size_t S = impl_->links.size();
  MLINK_RETURN_IF_ERROR(CheckPresent(inputs, {}, S));
  const LinkSpec& spec = impl_->spec0();
  MLINK_RETURN_IF_ERROR(target.Check(spec.target, "ensemble target"));
  const int64_t n = static_cast<int64_t>(target.rows());
  for (const auto& c : inputs) {
    if (static_cast<int64_t>(c.rows()) != n) return Status::InvalidArgument("ensemble: inputs and target differ in row count");
  }
  if (n < 2) return Status::InvalidArgument("ensemble training needs at least 2 rows");
  try {
    // The links are frozen, so their pre-activation outputs are computed once.
    MLINK_ASSIGN_OR_RETURN(auto y, internal::PackTargets({spec}, {&target}, spec.target.dim, spec.target.max_len + 1));
    torch::Tensor yt = spec.target.kind == FormatKind::kVector ? y.vec[0] : y.tokens[0];
    std::vector<torch::Tensor> zs;
    {
      torch::NoGradGuard no_grad;
      for (std::size_t i = 0; i < S; ++i) {
        auto* li = impl_->links[i]->impl();
        MLINK_ASSIGN_OR_RETURN(auto x, li->Pack(inputs[i]));
        li->module->eval();
        zs.push_back(li->module->Forward(x, &y)[0]);
      }
    }
    auto Z = torch::stack(zs, 0);  // [S, n, ...]

    std::mt19937_64 rng(o.seed);
    std::vector<int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    int64_t n_val = std::min<int64_t>(n - 1, static_cast<int64_t>(n * o.validation_share));
    std::vector<int64_t> val(order.begin(), order.begin() + n_val), train(order.begin() + n_val, order.end());

    auto raw = impl_->raw.clone().set_requires_grad(true);
    torch::optim::RMSprop opt({raw}, torch::optim::RMSpropOptions(o.learning_rate));
    auto combine = [&](const torch::Tensor& zb, const torch::Tensor& mask) {
      auto w = torch::softplus(raw) * mask;
      w = w / w.sum().clamp_min(1e-12);
      std::vector<int64_t> view(static_cast<std::size_t>(zb.dim()), 1);
      view[0] = static_cast<int64_t>(S);
      return (zb * w.view(view)).sum(0);
    };
    auto all_mask = torch::ones({static_cast<int64_t>(S)});
    auto val_t = torch::tensor(val, torch::kLong);
    double best = std::numeric_limits<double>::infinity(), last = 0;
    torch::Tensor best_raw = raw.detach().clone();
    int bad = 0, epoch = 0;
    std::uniform_int_distribution<int> coin(0, 1);
    for (; epoch < o.epochs; ++epoch) {
      std::shuffle(train.begin(), train.end(), rng);
      auto tt = torch::tensor(train, torch::kLong);
      double sum = 0;
      for (int64_t start = 0; start < static_cast<int64_t>(train.size()); start += o.batch_size) {
        auto idx = tt.narrow(0, start, std::min<int64_t>(o.batch_size, static_cast<int64_t>(train.size()) - start));
        // A random non-empty subset of sources for this step.
        auto mask = torch::zeros({static_cast<int64_t>(S)});
        bool any = false;
        for (std::size_t i = 0; i < S; ++i) {
          if (coin(rng)) { mask[i] = 1; any = true; }
        }
        if (!any) mask[std::uniform_int_distribution<std::size_t>(0, S - 1)(rng)] = 1;
        opt.zero_grad();
        auto loss = TaskLoss(spec, combine(Z.index_select(1, idx), mask), yt.index_select(0, idx));
        loss.backward();
        opt.step();
        sum += loss.item<double>() * idx.size(0);
      }
      last = sum / static_cast<double>(train.size());
      if (n_val == 0) continue;
      torch::NoGradGuard no_grad;
      double v = TaskLoss(spec, combine(Z.index_select(1, val_t), all_mask), yt.index_select(0, val_t)).item<double>();
      if (v < best - 1e-9) {
        best = v;
        best_raw = raw.detach().clone();
        bad = 0;
      } else if (++bad >= o.patience) {
        ++epoch;
        break;
      }
    }
    impl_->raw = (n_val > 0 && o.restore_best) ? best_raw : raw.detach().clone();

    TrainReport r;
    r.epochs_run = epoch;
    r.train_loss = last;
    r.validation_loss = n_val ? best : last;
    r.train_rows = train.size();
    r.validation_rows = static_cast<std::size_t>(n_val);
    if (n_val > 0) {
      std::vector<std::size_t> vr(val.begin(), val.end());
      std::vector<Column> vin;
      for (const auto& c : inputs) vin.push_back(c.Select(vr));
      MLINK_ASSIGN_OR_RETURN(r.validation, Evaluate(vin, target.Select(vr)));
    }
    return r;
  } catch (const std::exception& e) {
    return Status::Internal(std::string("ensemble training failed: ") + e.what());
  }
}

std::vector<uint8_t> Ensemble::Serialize() const {
  std::ostringstream os(std::ios::binary);
  {
    cereal::PortableBinaryOutputArchive ar(os);
    ar(std::string(kEnsembleMagic), kFormatVersion);
    std::vector<float> raw(impl_->raw.data_ptr<float>(), impl_->raw.data_ptr<float>() + impl_->raw.numel());
    ar(raw);
    std::vector<std::vector<uint8_t>> links;
    for (const auto& l : impl_->links) links.push_back(l->Serialize());
    ar(links);
  }
  std::string s = os.str();
  return std::vector<uint8_t>(s.begin(), s.end());
}

Result<std::unique_ptr<Ensemble>> Ensemble::Deserialize(const std::vector<uint8_t>& bytes, Device device) {
  std::vector<float> raw;
  std::vector<std::vector<uint8_t>> blobs;
  try {
    std::istringstream is(std::string(bytes.begin(), bytes.end()), std::ios::binary);
    cereal::PortableBinaryInputArchive ar(is);
    std::string magic;
    uint32_t version = 0;
    ar(magic, version);
    if (magic != kEnsembleMagic) return Status::InvalidArgument("not a saved ensemble (bad magic)");
    if (version != kFormatVersion) return Status::InvalidArgument("saved ensemble has format version " + std::to_string(version));
    ar(raw, blobs);
  } catch (const std::exception& e) {
    return Status::DataLoss(std::string("saved ensemble is truncated or corrupt: ") + e.what());
  }
  if (raw.size() != blobs.size()) return Status::DataLoss("saved ensemble: weight count differs from link count");
  std::vector<std::unique_ptr<Link>> links;
  for (const auto& b : blobs) {
    MLINK_ASSIGN_OR_RETURN(auto l, Link::Deserialize(b, device));
    links.push_back(std::move(l));
  }
  MLINK_ASSIGN_OR_RETURN(auto e, Create(std::move(links)));
  e->impl_->raw = torch::from_blob(raw.data(), {static_cast<int64_t>(raw.size())}, torch::kFloat).clone();
  return e;
}

Status Ensemble::Save(const std::string& path) const { return WriteFile(path, Serialize()); }

Result<std::unique_ptr<Ensemble>> Ensemble::Load(const std::string& path, Device device) {
  MLINK_ASSIGN_OR_RETURN(auto bytes, ReadFile(path));
  auto e = Deserialize(bytes, device);
  if (!e.ok()) return e.status().WithContext(path);
  return e;
}

}  // namespace mlink::link
