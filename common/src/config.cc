#include "mlink/common/config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace mlink::config {

namespace fs = std::filesystem;

struct Document {
  std::string file;
  std::string base_dir;
  std::vector<std::string> errors;
};

struct Section::Impl {
  std::shared_ptr<Document> doc;
  YAML::Node node;  // a mapping, or undefined when absent
  std::string path;
  bool present = false;
  std::set<std::string> asked;  // keys the program looked up
  std::vector<std::shared_ptr<Impl>> children;
};

namespace {

std::string MarkString(const std::string& file, const YAML::Mark& m) {
  if (m.is_null()) return file;
  return file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

std::string Describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return "\"" + n.Scalar() + "\"";
    default: return "nothing";
  }
}

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

}  // namespace

Section::Section() : impl_(std::make_shared<Impl>()) {
  impl_->doc = std::make_shared<Document>();
}
Section::~Section() = default;
Section::Section(const Section&) = default;
Section& Section::operator=(const Section&) = default;

bool Section::present() const { return impl_->present; }
const std::string& Section::path() const { return impl_->path; }

bool Section::Has(const std::string& key) const {
  impl_->asked.insert(key);
  return impl_->present && impl_->node[key].IsDefined() && !impl_->node[key].IsNull();
}

std::string Section::Where(const std::string& key) const {
  if (impl_->present && !key.empty()) {
    YAML::Node n = impl_->node[key];
    if (n.IsDefined()) return MarkString(impl_->doc->file, n.Mark());
  }
  if (impl_->present) return MarkString(impl_->doc->file, impl_->node.Mark());
  return impl_->doc->file;
}

void Section::Error(const std::string& key, const std::string& what) {
  std::string where = Where(key);
  std::string name = key.empty() ? impl_->path : Join(impl_->path, key);
  impl_->doc->errors.push_back(where + ": '" + name + "': " + what);
}

namespace {

// Looks up `key`; returns an undefined node (and records "missing" if required).
YAML::Node Lookup(Section& s, Section::Impl& impl, const std::string& key, bool required,
                  const std::string& expected) {
  impl.asked.insert(key);
  if (!impl.present) {
    if (required) s.Error(key, "missing; expected " + expected);
    return YAML::Node(YAML::NodeType::Undefined);
  }
  YAML::Node n = impl.node[key];
  if (!n.IsDefined() || n.IsNull()) {
    if (required) s.Error(key, "missing; expected " + expected);
    return YAML::Node(YAML::NodeType::Undefined);
  }
  return n;
}

template <typename T>
bool ScalarAs(const YAML::Node& n, T* out) {
  if (!n.IsScalar()) return false;
  try {
    *out = n.as<T>();
    return true;
  } catch (const YAML::Exception&) {
    return false;
  }
}

}  // namespace

// The friend-free helpers above need Impl; expose it through a local accessor.
#define MLINK_LOOKUP(key, required, expected) Lookup(*this, *impl_, key, required, expected)

void Section::Required(const std::string& key, std::string* out) {
  YAML::Node n = MLINK_LOOKUP(key, true, "a string");
  if (!n.IsDefined()) return;
  if (!n.IsScalar()) return Error(key, "expected a string, got " + Describe(n));
  *out = n.Scalar();
}

void Section::Optional(const std::string& key, std::string* out) {
  YAML::Node n = MLINK_LOOKUP(key, false, "a string");
  if (!n.IsDefined()) return;
  if (!n.IsScalar()) return Error(key, "expected a string, got " + Describe(n));
  *out = n.Scalar();
}

static std::string RangeText(const char* what, const std::string& lo, const std::string& hi) {
  return std::string("expected ") + what + " in [" + lo + ", " + hi + "]";
}

#define MLINK_INT_BODY(required)                                                           \
  std::string expected = RangeText("an integer", std::to_string(min), std::to_string(max)); \
  YAML::Node n = MLINK_LOOKUP(key, required, expected);                                    \
  if (!n.IsDefined()) return;                                                              \
  int64_t v = 0;                                                                           \
  if (!ScalarAs<int64_t>(n, &v) || v < min || v > max)                                     \
    return Error(key, expected + ", got " + Describe(n));                                  \
  *out = static_cast<decltype(+*out)>(v);

void Section::Required(const std::string& key, int64_t* out, int64_t min, int64_t max) { MLINK_INT_BODY(true) }
void Section::Optional(const std::string& key, int64_t* out, int64_t min, int64_t max) { MLINK_INT_BODY(false) }
void Section::Required(const std::string& key, int* out, int min, int max) { MLINK_INT_BODY(true) }
void Section::Optional(const std::string& key, int* out, int min, int max) { MLINK_INT_BODY(false) }
#undef MLINK_INT_BODY

#define MLINK_DOUBLE_BODY(required)                                               \
  std::ostringstream lo, hi;                                                      \
  lo << min;                                                                      \
  hi << max;                                                                      \
  std::string expected = RangeText("a number", lo.str(), hi.str());               \
  YAML::Node n = MLINK_LOOKUP(key, required, expected);                           \
  if (!n.IsDefined()) return;                                                     \
  double v = 0;                                                                   \
  if (!ScalarAs<double>(n, &v) || !(v >= min && v <= max))                        \
    return Error(key, expected + ", got " + Describe(n));                         \
  *out = v;

void Section::Required(const std::string& key, double* out, double min, double max) { MLINK_DOUBLE_BODY(true) }
void Section::Optional(const std::string& key, double* out, double min, double max) { MLINK_DOUBLE_BODY(false) }
#undef MLINK_DOUBLE_BODY

static void BoolBody(Section& s, Section::Impl& impl, const std::string& key, bool* out, bool required) {
  YAML::Node n = Lookup(s, impl, key, required, "true or false");
  if (!n.IsDefined()) return;
  bool v = false;
  if (!ScalarAs<bool>(n, &v)) return s.Error(key, "expected true or false, got " + Describe(n));
  *out = v;
}
void Section::Required(const std::string& key, bool* out) { BoolBody(*this, *impl_, key, out, true); }
void Section::Optional(const std::string& key, bool* out) { BoolBody(*this, *impl_, key, out, false); }

static void ChoiceBody(Section& s, Section::Impl& impl, const std::string& key, std::string* out,
                       std::initializer_list<const char*> choices, bool required) {
  std::string list;
  for (const char* c : choices) list += (list.empty() ? "" : ", ") + std::string(c);
  std::string expected = "one of {" + list + "}";
  YAML::Node n = Lookup(s, impl, key, required, expected);
  if (!n.IsDefined()) return;
  if (n.IsScalar()) {
    for (const char* c : choices) {
      if (n.Scalar() == c) {
        *out = n.Scalar();
        return;
      }
    }
  }
  s.Error(key, "expected " + expected + ", got " + Describe(n));
}
void Section::Required(const std::string& key, std::string* out, std::initializer_list<const char*> choices) {
  ChoiceBody(*this, *impl_, key, out, choices, true);
}
void Section::Optional(const std::string& key, std::string* out, std::initializer_list<const char*> choices) {
  ChoiceBody(*this, *impl_, key, out, choices, false);
}

void Section::Optional(const std::string& key, std::vector<std::string>* out) {
  YAML::Node n = MLINK_LOOKUP(key, false, "a list of strings");
  if (!n.IsDefined()) return;
  if (!n.IsSequence()) return Error(key, "expected a list of strings, got " + Describe(n));
  std::vector<std::string> v;
  for (std::size_t i = 0; i < n.size(); ++i) {
    if (!n[i].IsScalar())
      return Error(key, "expected a list of strings, item " + std::to_string(i) + " is " + Describe(n[i]));
    v.push_back(n[i].Scalar());
  }
  *out = std::move(v);
}

void Section::Optional(const std::string& key, std::vector<int64_t>* out, int64_t min, int64_t max) {
  std::string expected = "a list of integers in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
  YAML::Node n = MLINK_LOOKUP(key, false, expected);
  if (!n.IsDefined()) return;
  if (!n.IsSequence()) return Error(key, "expected " + expected + ", got " + Describe(n));
  std::vector<int64_t> v;
  for (std::size_t i = 0; i < n.size(); ++i) {
    int64_t x = 0;
    if (!ScalarAs<int64_t>(n[i], &x) || x < min || x > max)
      return Error(key, "expected " + expected + ", item " + std::to_string(i) + " is " + Describe(n[i]));
    v.push_back(x);
  }
  *out = std::move(v);
}

static std::string Resolve(const std::string& base, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute() || base.empty()) return p;
  return (fs::path(base) / p).lexically_normal().string();
}

void Section::RequiredPath(const std::string& key, std::string* out) {
  std::string v;
  Required(key, &v);
  if (!v.empty()) *out = Resolve(impl_->doc->base_dir, v);
}

void Section::OptionalPath(const std::string& key, std::string* out) {
  std::string v;
  Optional(key, &v);
  if (!v.empty()) *out = Resolve(impl_->doc->base_dir, v);
}

Section Section::Child(const std::string& key, bool required) {
  Section child;
  child.impl_->doc = impl_->doc;
  child.impl_->path = Join(impl_->path, key);
  impl_->children.push_back(child.impl_);
  YAML::Node n = MLINK_LOOKUP(key, required, "a mapping");
  if (!n.IsDefined()) return child;
  if (!n.IsMap()) {
    Error(key, "expected a mapping, got " + Describe(n));
    return child;
  }
  child.impl_->node = n;
  child.impl_->present = true;
  return child;
}

std::vector<Section> Section::List(const std::string& key, bool required) {
  std::vector<Section> out;
  YAML::Node n = MLINK_LOOKUP(key, required, "a list of mappings");
  if (!n.IsDefined()) return out;
  if (!n.IsSequence()) {
    Error(key, "expected a list of mappings, got " + Describe(n));
    return out;
  }
  for (std::size_t i = 0; i < n.size(); ++i) {
    Section child;
    child.impl_->doc = impl_->doc;
    child.impl_->path = Join(impl_->path, key) + "[" + std::to_string(i) + "]";
    impl_->children.push_back(child.impl_);
    if (!n[i].IsMap()) {
      impl_->doc->errors.push_back(MarkString(impl_->doc->file, n[i].Mark()) + ": '" +
                                   child.impl_->path + "': expected a mapping, got " + Describe(n[i]));
      continue;
    }
    child.impl_->node = n[i];
    child.impl_->present = true;
    out.push_back(child);
  }
  return out;
}

#undef MLINK_LOOKUP

static void CollectUnknown(const Section::Impl& impl, std::vector<std::string>* errors) {
  if (impl.present && impl.node.IsMap()) {
    std::string known;
    for (const auto& k : impl.asked) known += (known.empty() ? "" : ", ") + k;
    for (auto it = impl.node.begin(); it != impl.node.end(); ++it) {
      std::string key = it->first.Scalar();
      if (impl.asked.count(key)) continue;
      std::string name = impl.path.empty() ? key : impl.path + "." + key;
      errors->push_back(MarkString(impl.doc->file, it->first.Mark()) + ": '" + name +
                        "': unknown key; expected one of {" + known + "}");
    }
  }
  for (const auto& c : impl.children) CollectUnknown(*c, errors);
}

Status Section::Finish() {
  std::vector<std::string> errors = impl_->doc->errors;
  CollectUnknown(*impl_, &errors);
  if (errors.empty()) return Status::Ok();
  std::string msg = "invalid config (" + std::to_string(errors.size()) + " error" +
                    (errors.size() == 1 ? "" : "s") + "):";
  for (const auto& e : errors) msg += "\n  " + e;
  return Status::InvalidArgument(msg);
}

static Result<Section> FromNode(YAML::Node root, const std::string& name, const std::string& base_dir) {
  if (!root.IsMap()) {
    return Status::InvalidArgument(name + ": expected a mapping of keys at the top level, got " +
                                   Describe(root));
  }
  Section s;
  s.impl_->doc->file = name;
  s.impl_->doc->base_dir = base_dir;
  s.impl_->node = root;
  s.impl_->present = true;
  return s;
}

Result<Section> LoadString(const std::string& text, const std::string& name) {
  try {
    return FromNode(YAML::Load(text), name, "");
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(MarkString(name, e.mark) + ": YAML syntax error: " + e.msg);
  }
}

Result<Section> LoadFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return Status::NotFound("config file " + path + ": no such file");
  if (fs::is_directory(path, ec)) return Status::InvalidArgument("config file " + path + ": is a directory");
  std::ifstream in(path);
  if (!in) return Status::PermissionDenied("config file " + path + ": cannot be opened for reading");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    std::string base = fs::path(path).parent_path().string();
    return FromNode(YAML::Load(ss.str()), path, base.empty() ? "." : base);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(MarkString(path, e.mark) + ": YAML syntax error: " + e.msg);
  }
}

}  // namespace mlink::config
