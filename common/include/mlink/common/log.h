// Structured logging: one line per event, a component, a message and key=value fields.
//
//   MLOG_INFO("cloud", "round closed").Kv("link", id).Kv("round", r);
//
// The line is written when the temporary is destroyed (end of the full expression). Output is
// either human text ("2026-11-25T18:40:00.123Z INFO  cloud: round closed link=a round=3") or one
// JSON object per line, chosen at start-up. Thread-safe: lines from many threads never interleave.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>

namespace mlink::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class Format { kText, kJson };

// Parses "debug", "info", "warn", "error" (case-insensitive); false if unknown.
bool ParseLevel(std::string_view text, Level* out);
bool ParseFormat(std::string_view text, Format* out);

void SetLevel(Level level);
Level GetLevel();
void SetFormat(Format format);
// Lines go to stderr by default; a non-empty path appends them to that file instead.
// Returns false (and keeps the previous sink) if the file cannot be opened.
bool SetFile(const std::string& path);

inline bool Enabled(Level level) { return static_cast<int>(level) >= static_cast<int>(GetLevel()); }

class Line {
 public:
  Line(Level level, std::string_view component, std::string_view message);
  ~Line();
  Line(const Line&) = delete;
  Line& operator=(const Line&) = delete;

  Line& Kv(std::string_view key, std::string_view value);
  Line& Kv(std::string_view key, const std::string& value) { return Kv(key, std::string_view(value)); }
  Line& Kv(std::string_view key, const char* value) { return Kv(key, std::string_view(value)); }
  Line& Kv(std::string_view key, bool value);
  Line& Kv(std::string_view key, double value);
  template <typename T, typename = std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>>
  Line& Kv(std::string_view key, T value) {
    return KvRaw(key, std::to_string(value));
  }

 private:
  Line& KvRaw(std::string_view key, const std::string& raw_number);

  bool enabled_;
  Level level_;
  std::string component_;
  std::string message_;
  // Fields as (key, value, is_string) rendered at emit time.
  std::string text_fields_;
  std::string json_fields_;
};

// Escapes a string for inclusion inside a JSON string literal (no surrounding quotes).
std::string JsonEscape(std::string_view s);

}  // namespace mlink::log

#define MLOG_DEBUG(component, msg) ::mlink::log::Line(::mlink::log::Level::kDebug, component, msg)
#define MLOG_INFO(component, msg) ::mlink::log::Line(::mlink::log::Level::kInfo, component, msg)
#define MLOG_WARN(component, msg) ::mlink::log::Line(::mlink::log::Level::kWarn, component, msg)
#define MLOG_ERROR(component, msg) ::mlink::log::Line(::mlink::log::Level::kError, component, msg)
