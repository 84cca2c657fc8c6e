#include "mlink/eval/fmnist.h"

#include <zlib.h>

#include <cstdlib>

namespace mlink::eval {

std::string DefaultFashionMnistDir() {
  const char* env = std::getenv("MLINK_FMNIST_DIR");
  return env && *env ? env : "/usr/share/datasets/fashion-mnist";
}

namespace {

Result<std::vector<uint8_t>> ReadGz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) {
    return Status::NotFound("Fashion-MNIST file " + path +
                            " cannot be opened; install Debian's dataset-fashion-mnist (scripts/setup does) "
                            "or set MLINK_FMNIST_DIR");
  }
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.insert(out.end(), buf, buf + n);
  bool err = n < 0;
  gzclose(f);
  if (err) return Status::DataLoss("Fashion-MNIST file " + path + " is corrupt (gzip error)");
  return out;
}

uint32_t Be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }

}  // namespace

Result<FashionMnist> LoadFashionMnist(const std::string& dir, bool train, int limit) {
  std::string prefix = dir + "/" + (train ? "train" : "t10k");
  MLINK_ASSIGN_OR_RETURN(auto img, ReadGz(prefix + "-images-idx3-ubyte.gz"));
  MLINK_ASSIGN_OR_RETURN(auto lab, ReadGz(prefix + "-labels-idx1-ubyte.gz"));
  if (img.size() < 16 || Be32(img.data()) != 2051 || lab.size() < 8 || Be32(lab.data()) != 2049) {
    return Status::DataLoss("Fashion-MNIST files under " + dir + " have bad idx headers");
  }
  uint32_t n = Be32(img.data() + 4);
  if (Be32(lab.data() + 4) != n || Be32(img.data() + 8) != 28 || Be32(img.data() + 12) != 28 ||
      img.size() != 16 + std::size_t(n) * 784 || lab.size() != 8 + n) {
    return Status::DataLoss("Fashion-MNIST files under " + dir + " disagree on sizes");
  }
  FashionMnist d;
  d.rows = limit > 0 ? std::min<int>(limit, static_cast<int>(n)) : static_cast<int>(n);
  d.pixels.assign(img.begin() + 16, img.begin() + 16 + std::size_t(d.rows) * 784);
  d.labels.assign(lab.begin() + 8, lab.begin() + 8 + d.rows);
  return d;
}

const std::vector<std::string>& CaptionWords() {
  static const std::vector<std::string> words = {"t-shirt", "top", "trouser", "pullover", "dress",  "coat",
                                                 "sandal",  "shirt", "sneaker", "bag",      "ankle", "boot"};
  return words;
}

}  // namespace mlink::eval
