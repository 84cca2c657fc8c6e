#include "mlink/common/log.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace mlink::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<int> g_format{static_cast<int>(Format::kText)};
std::mutex g_sink_mu;
FILE* g_sink = nullptr;  // GUARDED_BY(g_sink_mu); nullptr means stderr

const char* LevelName(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "info";
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string Timestamp() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];  // room for any int the compiler imagines in each field
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

bool NeedsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\n' || c == '\t') return true;
  }
  return false;
}

}  // namespace

bool ParseLevel(std::string_view text, Level* out) {
  std::string t = Lower(text);
  if (t == "debug") *out = Level::kDebug;
  else if (t == "info") *out = Level::kInfo;
  else if (t == "warn" || t == "warning") *out = Level::kWarn;
  else if (t == "error") *out = Level::kError;
  else return false;
  return true;
}

bool ParseFormat(std::string_view text, Format* out) {
  std::string t = Lower(text);
  if (t == "text") *out = Format::kText;
  else if (t == "json") *out = Format::kJson;
  else return false;
  return true;
}

void SetLevel(Level level) { g_level.store(static_cast<int>(level)); }
Level GetLevel() { return static_cast<Level>(g_level.load()); }
void SetFormat(Format format) { g_format.store(static_cast<int>(format)); }

bool SetFile(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_sink_mu);
  if (path.empty()) {
    if (g_sink) std::fclose(g_sink);
    g_sink = nullptr;
    return true;
  }
  FILE* f = std::fopen(path.c_str(), "a");
  if (!f) return false;
  std::setvbuf(f, nullptr, _IOLBF, 0);
  if (g_sink) std::fclose(g_sink);
  g_sink = f;
  return true;
}

std::string JsonEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

Line::Line(Level level, std::string_view component, std::string_view message)
    : enabled_(Enabled(level)), level_(level) {
  if (enabled_) {
    component_ = component;
    message_ = message;
  }
}

Line& Line::Kv(std::string_view key, std::string_view value) {
  if (!enabled_) return *this;
  text_fields_ += ' ';
  text_fields_ += key;
  text_fields_ += '=';
  if (NeedsQuotes(value)) {
    text_fields_ += '"';
    text_fields_ += JsonEscape(value);
    text_fields_ += '"';
  } else {
    text_fields_ += value;
  }
  json_fields_ += ",\"" + JsonEscape(key) + "\":\"" + JsonEscape(value) + "\"";
  return *this;
}

Line& Line::Kv(std::string_view key, bool value) { return KvRaw(key, value ? "true" : "false"); }

Line& Line::Kv(std::string_view key, double value) {
  if (!std::isfinite(value)) return Kv(key, std::string_view(std::isnan(value) ? "nan" : "inf"));
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", value);
  return KvRaw(key, buf);
}

Line& Line::KvRaw(std::string_view key, const std::string& raw) {
  if (!enabled_) return *this;
  text_fields_ += ' ';
  text_fields_ += key;
  text_fields_ += '=';
  text_fields_ += raw;
  json_fields_ += ",\"" + JsonEscape(key) + "\":" + raw;
  return *this;
}

Line::~Line() {
  if (!enabled_) return;
  std::string line;
  if (static_cast<Format>(g_format.load()) == Format::kJson) {
    line = "{\"ts\":\"" + Timestamp() + "\",\"level\":\"" + LevelName(level_) +
           "\",\"component\":\"" + JsonEscape(component_) + "\",\"msg\":\"" +
           JsonEscape(message_) + "\"" + json_fields_ + "}\n";
  } else {
    char lvl[8];
    std::snprintf(lvl, sizeof(lvl), "%-5s", LevelName(level_));
    for (char* p = lvl; *p; ++p) *p = static_cast<char>(std::toupper(*p));
    line = Timestamp() + " " + lvl + " " + component_ + ": " + message_ + text_fields_ + "\n";
  }
  std::lock_guard<std::mutex> lock(g_sink_mu);
  FILE* out = g_sink ? g_sink : stderr;
  std::fwrite(line.data(), 1, line.size(), out);
  std::fflush(out);
}

}  // namespace mlink::log
