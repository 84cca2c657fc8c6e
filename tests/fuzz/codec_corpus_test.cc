// Replays the codec fuzzer's kept inputs through the fuzzer's own check (fuzz/entries.h) in the
// normal build: seeds (real frames of every message kind) and every input a fuzz run broke.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "corpus_replay.h"
#include "entries.h"
#include "mlink/protocol/codec.h"

namespace mlink::fuzz {
namespace {

TEST(CodecCorpusTest, SeedsAreValidFramesOfEveryKind) {
  const auto seeds = ReadCorpus(MLINK_SOURCE_DIR, "codec", "corpus");
  ASSERT_GE(seeds.size(), 13u);
  std::set<std::string> kinds;
  for (const auto& f : seeds) {
    auto m = protocol::Decode(f.bytes.data(), f.bytes.size());
    ASSERT_TRUE(m.ok()) << f.path << ": " << m.status().ToString();
    kinds.insert(protocol::MessageTypeName(protocol::TypeOf(*m)));
    EXPECT_TRUE(CheckCodecInput(f.bytes.data(), f.bytes.size()).ok()) << f.path;
  }
  EXPECT_EQ(kinds.size(), 7u);  // Hello, Welcome, GlobalLink, Update, Ack, Reject, Error
}

TEST(CodecCorpusTest, RegressionInputsKeepTheirInvariants) {
  const auto inputs = ReadCorpus(MLINK_SOURCE_DIR, "codec", "regressions");
  for (const auto& f : inputs) {
    Status st = CheckCodecInput(f.bytes.data(), f.bytes.size());
    EXPECT_TRUE(st.ok()) << f.path << ": " << st.ToString();
  }
}

TEST(CodecCorpusTest, RefusedFramesAreCleanOutcomes) {
  // A valid frame passes; a refused one is a clean decode error, not an invariant break.
  const auto seeds = ReadCorpus(MLINK_SOURCE_DIR, "codec", "corpus");
  ASSERT_FALSE(seeds.empty());
  std::vector<uint8_t> bytes = seeds.front().bytes;
  EXPECT_TRUE(CheckCodecInput(bytes.data(), bytes.size()).ok());
  bytes[0] = 'X';  // bad magic: refused as malformed, which is a clean outcome
  EXPECT_TRUE(CheckCodecInput(bytes.data(), bytes.size()).ok());
  EXPECT_FALSE(protocol::Decode(bytes.data(), bytes.size()).ok());
  EXPECT_TRUE(CheckCodecInput(nullptr, 0).ok());
}

}  // namespace
}  // namespace mlink::fuzz
