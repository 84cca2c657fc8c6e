#include "mlink/link/spec.h"

#include <cstdio>
#include <sstream>

#include "mlink/common/config.h"
#include "mlink/common/flat_params.h"
#include "mlink/link/data.h"

namespace mlink::link {

namespace {
struct TaskName {
  TaskKind kind;
  const char* name;
};
constexpr TaskName kTaskNames[] = {
    {TaskKind::kSingleLabel, "single_label"}, {TaskKind::kMultiLabel, "multi_label"},
    {TaskKind::kRegression, "regression"},    {TaskKind::kCount, "count"},
    {TaskKind::kBox, "box"},                  {TaskKind::kSequence, "sequence"},
};

std::string FormatText(const OutputFormat& f) {
  if (f.kind == FormatKind::kVector) return "vec:" + std::to_string(f.dim);
  return "seq:" + std::to_string(f.vocab) + ":" + std::to_string(f.max_len);
}

Status CheckFormat(const OutputFormat& f, const char* which) {
  std::string w = std::string("link spec: ") + which;
  if (f.kind == FormatKind::kVector) {
    if (f.dim <= 0 || f.dim > 1 << 20) return Status::InvalidArgument(w + ".dim must be in [1, 1048576], got " + std::to_string(f.dim));
  } else {
    if (f.vocab <= kFirstContentToken || f.vocab > 1 << 20)
      return Status::InvalidArgument(w + ".vocab must be in [4, 1048576] (ids 0-2 are PAD, BOS, EOS), got " + std::to_string(f.vocab));
    if (f.max_len <= 0 || f.max_len > 4096)
      return Status::InvalidArgument(w + ".max_len must be in [1, 4096], got " + std::to_string(f.max_len));
  }
  return Status::Ok();
}
}  // namespace

const char* TaskKindName(TaskKind t) {
  for (const auto& tn : kTaskNames) {
    if (tn.kind == t) return tn.name;
  }
  return "unknown";
}

Result<TaskKind> ParseTaskKind(const std::string& name) {
  for (const auto& tn : kTaskNames) {
    if (name == tn.name) return tn.kind;
  }
  return Status::InvalidArgument("unknown task kind '" + name +
                                 "'; expected one of single_label, multi_label, regression, count, box, sequence");
}

std::string LinkSpec::ArchName() const {
  std::string s = source.kind == FormatKind::kVector ? "vec" : "seq";
  return s + "2" + (target.kind == FormatKind::kVector ? "vec" : "seq");
}

int LinkSpec::TargetLength() const {
  return target.kind == FormatKind::kVector ? target.dim : target.max_len + 1;
}

Status LinkSpec::Validate() const {
  MLINK_RETURN_IF_ERROR(CheckFormat(source, "source"));
  MLINK_RETURN_IF_ERROR(CheckFormat(target, "target"));
  const bool tgt_seq = target.kind == FormatKind::kSequence;
  if (tgt_seq != (task == TaskKind::kSequence)) {
    return Status::InvalidArgument(std::string("link spec: task '") + TaskKindName(task) +
                                   "' does not fit a " + (tgt_seq ? "sequence" : "vector") +
                                   " target; sequence targets take task 'sequence' and only they do");
  }
  if (task == TaskKind::kBox && target.dim != 4) {
    return Status::InvalidArgument("link spec: task 'box' needs a 4-D target [x1, y1, x2, y2], got dim " +
                                   std::to_string(target.dim));
  }
  if (task == TaskKind::kSingleLabel && target.dim < 2) {
    return Status::InvalidArgument("link spec: task 'single_label' needs at least 2 classes, got dim " +
                                   std::to_string(target.dim));
  }
  if (hidden < 0 || hidden > 65536) return Status::InvalidArgument("link spec: hidden must be in [0, 65536] (0 = 2 x target length), got " + std::to_string(hidden));
  if (!(dropout >= 0.0 && dropout < 1.0)) return Status::InvalidArgument("link spec: dropout must be in [0, 1)");
  if (embed_dim <= 0 || embed_dim > 4096) return Status::InvalidArgument("link spec: embed_dim must be in [1, 4096], got " + std::to_string(embed_dim));
  if (lstm_hidden <= 0 || lstm_hidden > 4096) return Status::InvalidArgument("link spec: lstm_hidden must be in [1, 4096], got " + std::to_string(lstm_hidden));
  return Status::Ok();
}

std::string LinkSpec::Canonical() const {
  char drop[32];
  std::snprintf(drop, sizeof(drop), "%.6g", dropout);
  std::ostringstream os;
  os << "mlink-link-v1;src=" << FormatText(source) << ";tgt=" << FormatText(target)
     << ";task=" << TaskKindName(task)
     << ";loss=" << (regression_loss == RegressionLoss::kL1 ? "l1" : "mse")
     << ";hidden=" << HiddenUnits() << ";dropout=" << drop;
  if (source.kind == FormatKind::kSequence || target.kind == FormatKind::kSequence) {
    os << ";embed=" << embed_dim << ";lstm=" << lstm_hidden;
  }
  return os.str();
}

uint64_t LinkSpec::Hash() const {
  std::string c = Canonical();
  return Fnv1a64(c.data(), c.size());
}

std::string LinkSpec::HashHex() const {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(Hash()));
  return buf;
}

static OutputFormat FormatFromConfig(config::Section s) {
  OutputFormat f;
  std::string kind = "vector";
  s.Required("kind", &kind, {"vector", "sequence"});
  if (kind == "vector") {
    f.kind = FormatKind::kVector;
    s.Required("dim", &f.dim, 1, 1 << 20);
  } else {
    f.kind = FormatKind::kSequence;
    s.Required("vocab", &f.vocab, kFirstContentToken + 1, 1 << 20);
    s.Required("max_len", &f.max_len, 1, 4096);
  }
  return f;
}

LinkSpec LinkSpecFromConfig(config::Section& section) {
  LinkSpec spec;
  spec.source = FormatFromConfig(section.Child("source", true));
  spec.target = FormatFromConfig(section.Child("target", true));
  std::string task = "single_label";
  section.Required("task", &task, {"single_label", "multi_label", "regression", "count", "box", "sequence"});
  auto parsed = ParseTaskKind(task);
  if (parsed.ok()) spec.task = *parsed;
  std::string loss = "mse";
  section.Optional("loss", &loss, {"mse", "l1"});
  spec.regression_loss = loss == "l1" ? RegressionLoss::kL1 : RegressionLoss::kMse;
  section.Optional("hidden", &spec.hidden, 0, 65536);
  section.Optional("dropout", &spec.dropout, 0.0, 0.99);
  section.Optional("embed_dim", &spec.embed_dim, 1, 4096);
  section.Optional("lstm_hidden", &spec.lstm_hidden, 1, 4096);
  return spec;
}

// ------------------------------------------------------------------------------- Column

Column Column::Select(const std::vector<std::size_t>& idx) const {
  Column out;
  out.kind = kind;
  out.dim = dim;
  if (kind == FormatKind::kVector) {
    out.values.reserve(idx.size() * static_cast<std::size_t>(dim));
    for (std::size_t i : idx) out.values.insert(out.values.end(), row(i), row(i) + dim);
  } else {
    out.seqs.reserve(idx.size());
    for (std::size_t i : idx) out.seqs.push_back(seqs[i]);
  }
  return out;
}

Status Column::Check(const OutputFormat& f, const char* what) const {
  std::string w(what);
  if (kind != f.kind) {
    return Status::InvalidArgument(w + ": expected " + (f.kind == FormatKind::kVector ? "vectors" : "token sequences") +
                                   ", got " + (kind == FormatKind::kVector ? "vectors" : "token sequences"));
  }
  if (kind == FormatKind::kVector) {
    if (dim != f.dim) return Status::InvalidArgument(w + ": expected vectors of length " + std::to_string(f.dim) + ", got " + std::to_string(dim));
    if (dim > 0 && values.size() % static_cast<std::size_t>(dim) != 0)
      return Status::InvalidArgument(w + ": " + std::to_string(values.size()) + " values is not a whole number of rows of " + std::to_string(dim));
    return Status::Ok();
  }
  for (std::size_t r = 0; r < seqs.size(); ++r) {
    if (static_cast<int>(seqs[r].size()) > f.max_len)
      return Status::InvalidArgument(w + ": row " + std::to_string(r) + " has " + std::to_string(seqs[r].size()) +
                                     " tokens, more than max_len " + std::to_string(f.max_len));
    for (int32_t t : seqs[r]) {
      if (t < kFirstContentToken || t >= f.vocab)
        return Status::InvalidArgument(w + ": row " + std::to_string(r) + " has token id " + std::to_string(t) +
                                       ", expected content ids in [3, " + std::to_string(f.vocab) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace mlink::link
