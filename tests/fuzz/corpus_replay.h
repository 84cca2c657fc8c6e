// Reads every file kept for a fuzz target (fuzz/corpus/TARGET and fuzz/regressions/TARGET).
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace mlink::fuzz {

struct CorpusFile {
  std::string path;
  std::vector<uint8_t> bytes;
};

inline std::vector<CorpusFile> ReadCorpus(const std::string& source_dir, const std::string& target,
                                          const std::string& kind) {
  std::vector<CorpusFile> out;
  const std::filesystem::path dir = std::filesystem::path(source_dir) / "fuzz" / kind / target;
  if (!std::filesystem::is_directory(dir)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().filename().string()[0] == '.') continue;
    std::ifstream in(entry.path(), std::ios::binary);
    CorpusFile f{entry.path().string(),
                 std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>())};
    out.push_back(std::move(f));
  }
  std::sort(out.begin(), out.end(), [](const CorpusFile& a, const CorpusFile& b) { return a.path < b.path; });
  return out;
}

}  // namespace mlink::fuzz
