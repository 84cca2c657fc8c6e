// Writes real encoded frames, several per message kind, as the codec fuzzer's seed corpus:
//   codec_seeds OUT_DIR
// scripts/fuzz runs it before fuzzing; the seeds are also kept in fuzz/corpus/codec.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "mlink/protocol/codec.h"
#include "mlink/protocol/endpoint.h"

using namespace mlink::protocol;

namespace {

GlobalLink MakeGlobal(std::vector<float> params) {
  GlobalLink g;
  g.link_id = "hog->fullbody";
  g.spec_hash = 0x1234abcd5678ef00ull;
  g.round = 3;
  g.params = std::move(params);
  g.checksum = ParamsChecksum(g.params);
  return g;
}

Update MakeUpdate(std::vector<float> delta) {
  Update u;
  u.link_id = "classifier->caption";
  u.base_round = 7;
  u.delta = std::move(delta);
  u.samples = 120;
  u.loss = 0.25;
  u.metric = 0.875;
  u.checksum = ParamsChecksum(u.delta);
  return u;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: codec_seeds OUT_DIR\n");
    return 2;
  }
  const std::string out = argv[1];
  std::vector<std::pair<std::string, Message>> seeds;
  seeds.emplace_back("hello", Hello{kProtocolVersion, "site-a", {{"hog->fullbody", 0x1234abcd5678ef00ull}}});
  seeds.emplace_back("hello-empty", Hello{kProtocolVersion, "", {}});
  seeds.emplace_back("hello-many", Hello{kProtocolVersion, "site-b",
                                         {{"a", 1}, {"b", 2}, {"classifier->caption", 3}}});
  seeds.emplace_back("welcome", Welcome{kProtocolVersion, "site-a", {"hog->fullbody"},
                                        {"x->y"}, {"unknown link"}});
  seeds.emplace_back("welcome-empty", Welcome{kProtocolVersion, "", {}, {}, {}});
  seeds.emplace_back("global", MakeGlobal({0.5f, -1.25f, 3.0f, 0.0f}));
  seeds.emplace_back("global-empty", MakeGlobal({}));
  seeds.emplace_back("update", MakeUpdate({0.125f, -0.5f, 1e-3f}));
  seeds.emplace_back("update-nan", MakeUpdate({std::numeric_limits<float>::quiet_NaN(),
                                               std::numeric_limits<float>::infinity()}));
  seeds.emplace_back("ack", Ack{"hog->fullbody", 3, 2});
  seeds.emplace_back("reject", Reject{"hog->fullbody", 3, RejectReason::kDuplicate, "duplicate update"});
  seeds.emplace_back("reject-unknown-reason", Reject{"", 0, static_cast<RejectReason>(999), ""});
  seeds.emplace_back("error", Error{RejectReason::kNotHello, "first message was not Hello"});
  for (const auto& [name, message] : seeds) {
    const std::vector<uint8_t> bytes = Encode(message);
    std::ofstream f(out + "/" + name + ".bin", std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!f) {
      std::fprintf(stderr, "codec_seeds: cannot write %s/%s.bin\n", out.c_str(), name.c_str());
      return 1;
    }
  }
  std::printf("codec_seeds: %zu frames in %s\n", seeds.size(), out.c_str());
  return 0;
}
