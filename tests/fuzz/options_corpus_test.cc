// Replays the config fuzzers' kept inputs through the fuzzers' own checks (fuzz/entries.h) in the
// normal build: the seeds (the shipped configs and variants) and every input a fuzz run broke.
#include <gtest/gtest.h>

#include <string>

#include "corpus_replay.h"
#include "entries.h"
#include "mlink/cloud/options.h"
#include "mlink/edge/options.h"

namespace mlink::fuzz {
namespace {

std::string AsText(const CorpusFile& f) { return std::string(f.bytes.begin(), f.bytes.end()); }

TEST(OptionsCorpusTest, CloudSeedsLoadAndKeepTheirInvariants) {
  const auto seeds = ReadCorpus(MLINK_SOURCE_DIR, "cloud_options", "corpus");
  ASSERT_GE(seeds.size(), 2u);
  for (const auto& f : seeds) {
    auto o = cloud::ParseCloudOptions(AsText(f), "seed.yaml");
    EXPECT_TRUE(o.ok()) << f.path << ": " << o.status().ToString();
    EXPECT_TRUE(CheckCloudOptionsInput(f.bytes.data(), f.bytes.size()).ok()) << f.path;
  }
}

TEST(OptionsCorpusTest, EdgeSeedsLoadAndKeepTheirInvariants) {
  const auto seeds = ReadCorpus(MLINK_SOURCE_DIR, "edge_options", "corpus");
  ASSERT_GE(seeds.size(), 4u);
  for (const auto& f : seeds) {
    auto o = edge::ParseEdgeOptions(AsText(f), "seed.yaml");
    EXPECT_TRUE(o.ok()) << f.path << ": " << o.status().ToString();
    EXPECT_TRUE(CheckEdgeOptionsInput(f.bytes.data(), f.bytes.size()).ok()) << f.path;
  }
}

TEST(OptionsCorpusTest, RegressionInputsKeepTheirInvariants) {
  for (const char* target : {"cloud_options", "edge_options"}) {
    for (const auto& f : ReadCorpus(MLINK_SOURCE_DIR, target, "regressions")) {
      Status st = std::string(target) == "cloud_options" ? CheckCloudOptionsInput(f.bytes.data(), f.bytes.size())
                                                         : CheckEdgeOptionsInput(f.bytes.data(), f.bytes.size());
      EXPECT_TRUE(st.ok()) << f.path << ": " << st.ToString();
    }
  }
}

// The inputs the fuzz targets' invariants flagged (kept in fuzz/regressions/): each is now refused
// with an error that names the key.
TEST(OptionsCorpusTest, EmptyNamesAreRefusedWithTheirKey) {
  auto read = [](const std::string& target, const std::string& file) {
    for (const auto& f : ReadCorpus(MLINK_SOURCE_DIR, target, "regressions")) {
      if (f.path.size() >= file.size() && f.path.compare(f.path.size() - file.size(), file.size(), file) == 0) return AsText(f);
    }
    ADD_FAILURE() << "fuzz/regressions/" << target << "/" << file << " is missing";
    return std::string();
  };
  auto cloud = cloud::ParseCloudOptions(read("cloud_options", "empty-link-ids.yaml"), "c.yaml");
  ASSERT_FALSE(cloud.ok());
  EXPECT_NE(cloud.status().message().find("c.yaml:4:9: 'links[0].id': must not be empty"), std::string::npos)
      << cloud.status().message();
  EXPECT_NE(cloud.status().message().find("c.yaml:6:9: 'links[1].id': must not be empty"), std::string::npos)
      << cloud.status().message();

  auto fed = edge::ParseEdgeOptions(read("edge_options", "empty-federated-source.yaml"), "e.yaml");
  ASSERT_FALSE(fed.ok());
  EXPECT_NE(fed.status().message().find("'cloud.links[0].source': '' is not one of the site's models"),
            std::string::npos) << fed.status().message();
  EXPECT_NE(fed.status().message().find("'cloud.links[0].target': '' is neither one of the site's models"),
            std::string::npos) << fed.status().message();

  auto model = edge::ParseEdgeOptions(read("edge_options", "empty-model-name.yaml"), "m.yaml");
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("m.yaml:3:12: 'models[0].name': must not be empty"), std::string::npos)
      << model.status().message();
}

TEST(OptionsCorpusTest, ParseFromTextMatchesLoadFromFile) {
  const auto seeds = ReadCorpus(MLINK_SOURCE_DIR, "cloud_options", "corpus");
  auto from_file = cloud::LoadCloudOptions(std::string(MLINK_SOURCE_DIR) + "/configs/cloud.yaml");
  ASSERT_TRUE(from_file.ok()) << from_file.status().ToString();
  for (const auto& f : seeds) {
    if (f.path.size() < 10 || f.path.compare(f.path.size() - 10, 10, "cloud.yaml") != 0) continue;
    auto from_text = cloud::ParseCloudOptions(AsText(f), "cloud.yaml");
    ASSERT_TRUE(from_text.ok()) << from_text.status().ToString();
    EXPECT_EQ(from_text->port, from_file->port);
    EXPECT_EQ(from_text->http_port, from_file->http_port);
    ASSERT_EQ(from_text->links.size(), from_file->links.size());
    for (std::size_t i = 0; i < from_text->links.size(); ++i) {
      EXPECT_EQ(from_text->links[i].id, from_file->links[i].id);
      EXPECT_EQ(from_text->links[i].spec.Hash(), from_file->links[i].spec.Hash());
    }
    EXPECT_EQ(from_text->ca_file, "../run/certs/ca.pem");  // relative paths stay as written
    return;
  }
  FAIL() << "fuzz/corpus/cloud_options/cloud.yaml is missing";
}

TEST(OptionsCorpusTest, ConfigErrorsNameTheConfig) {
  const std::string bad = "server: {port: 99999}\ntls: {ca: a, cert: b}\nlinks: []\n";
  auto o = cloud::ParseCloudOptions(bad, "bad.yaml");
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(o.status().message().find("bad.yaml:1:16: 'server.port': expected an integer in [0, 65535], got \"99999\""),
            std::string::npos) << o.status().message();
  EXPECT_NE(o.status().message().find("'tls.key': missing"), std::string::npos) << o.status().message();
  EXPECT_TRUE(CheckCloudOptionsInput(reinterpret_cast<const uint8_t*>(bad.data()), bad.size()).ok());
}

}  // namespace
}  // namespace mlink::fuzz
