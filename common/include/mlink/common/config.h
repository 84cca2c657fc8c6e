// Config loading with validation that names the bad key, its file, line and what was expected.
//
//   MLINK_ASSIGN_OR_RETURN(config::Section root, config::LoadFile(path));
//   root.Required("port", &opts.port, 1, 65535);
//   root.Optional("log_level", &opts.log_level, {"debug", "info", "warn", "error"});
//   config::Section tls = root.Child("tls");
//   tls.Required("cert", &opts.cert_file);
//   return root.Finish();   // also rejects keys nobody asked for, in every child
//
// A Section records every error instead of stopping at the first, so one run of a bad config
// lists everything wrong with it. Unknown keys are errors (a typo never becomes a silent
// default). Not thread-safe; a config is read once at start-up.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "mlink/common/status.h"

namespace mlink::config {

class Section {
 public:
  Section();  // an empty, absent section
  ~Section();
  Section(const Section&);
  Section& operator=(const Section&);

  // True if the section exists in the document (Child() of an absent key gives !present()).
  bool present() const;
  bool Has(const std::string& key) const;
  // "file:line:col" of this section (or of `key` in it, if present).
  std::string Where(const std::string& key = "") const;
  // The dotted path of this section from the document root, e.g. "links[2].spec".
  const std::string& path() const;

  // Scalars. Required* records an error if the key is missing; Optional* leaves *out unchanged.
  void Required(const std::string& key, std::string* out);
  void Required(const std::string& key, int64_t* out, int64_t min, int64_t max);
  void Required(const std::string& key, int* out, int min, int max);
  void Required(const std::string& key, double* out, double min, double max);
  void Required(const std::string& key, bool* out);
  void Optional(const std::string& key, std::string* out);
  void Optional(const std::string& key, int64_t* out, int64_t min, int64_t max);
  void Optional(const std::string& key, int* out, int min, int max);
  void Optional(const std::string& key, double* out, double min, double max);
  void Optional(const std::string& key, bool* out);
  // A string restricted to one of `choices`.
  void Required(const std::string& key, std::string* out, std::initializer_list<const char*> choices);
  void Optional(const std::string& key, std::string* out, std::initializer_list<const char*> choices);
  // Lists of scalars.
  void Optional(const std::string& key, std::vector<std::string>* out);
  void Optional(const std::string& key, std::vector<int64_t>* out, int64_t min, int64_t max);
  // A path, resolved relative to the directory of the config file unless absolute.
  void RequiredPath(const std::string& key, std::string* out);
  void OptionalPath(const std::string& key, std::string* out);

  // A nested mapping. Missing: required records an error; optional returns !present().
  Section Child(const std::string& key, bool required = false);
  // A list of mappings; missing gives an empty list (and an error if required).
  std::vector<Section> List(const std::string& key, bool required = false);

  // Records a custom validation error attached to `key` (e.g. cross-field checks).
  void Error(const std::string& key, const std::string& what);

  // OK if no error was recorded anywhere in the document and no unknown key remains in this
  // section or any child taken from it. Call once on the root after reading everything.
  Status Finish();

  // Implementation detail (config.cc), shared by copies of a Section.
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Loads a YAML file whose root must be a mapping. A missing file, a YAML syntax error or a
// non-mapping root is an error naming the file (and line).
Result<Section> LoadFile(const std::string& path);
// Same, from text; `name` stands in for the file name in messages.
Result<Section> LoadString(const std::string& text, const std::string& name);

}  // namespace mlink::config
