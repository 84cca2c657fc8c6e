// The shipped configs load, and bad ones fail with errors naming file, line and key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "mlink/cloud/options.h"
#include "mlink/edge/options.h"
#include "mlink/protocol/endpoint.h"

namespace mlink {
namespace {

namespace fs = std::filesystem;

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string p = (fs::temp_directory_path() / ("mlink-" + std::to_string(::getpid()) + "-" + name)).string();
  std::ofstream(p) << text;
  return p;
}

TEST(OptionsTest, ShippedCloudConfigLoads) {
  auto o = cloud::LoadCloudOptions(std::string(MLINK_SOURCE_DIR) + "/configs/cloud.yaml");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->port, 8443);
  EXPECT_EQ(o->read_budget_bytes, std::size_t{64} << 20);
  ASSERT_EQ(o->links.size(), 2u);
  EXPECT_EQ(o->links[0].id, "hog->fullbody");
  EXPECT_EQ(o->links[0].spec.task, link::TaskKind::kCount);
  EXPECT_EQ(o->links[0].quorum, 2);
  EXPECT_EQ(o->links[1].spec.ArchName(), "vec2seq");
  EXPECT_EQ(o->links[1].init_seed, 1u);
  EXPECT_TRUE(fs::path(o->ca_file).is_absolute() || o->ca_file.find("run/certs/ca.pem") != std::string::npos);
}

TEST(OptionsTest, ShippedEdgeConfigsLoad) {
  for (const char* s : {"a", "b", "c"}) {
    auto o = edge::LoadEdgeOptions(std::string(MLINK_SOURCE_DIR) + "/configs/edge-site-" + s + ".yaml");
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(o->site, std::string("site-") + s);
    EXPECT_EQ(o->cloud.port, 8443);
    EXPECT_EQ(o->cloud.path, "/v1/federation");
  }
}

TEST(OptionsTest, BadCloudConfigNamesEveryProblem) {
  std::string p = WriteTemp("bad-cloud.yaml",
                            "server: {port: 70000}\n"
                            "tls: {ca: a.pem, cert: b.pem}\n"
                            "links:\n"
                            "  - id: x\n"
                            "    spec: {source: {kind: vector, dim: 0}, target: {kind: vector, dim: 3}, task: box}\n"
                            "    round: {min_edges: 2, quorum: 5}\n"
                            "  - id: x\n"
                            "    spec: {source: {kind: vector, dim: 2}, target: {kind: vector, dim: 3}, task: single_label}\n"
                            "    colour: red\n");
  auto o = cloud::LoadCloudOptions(p);
  fs::remove(p);
  ASSERT_FALSE(o.ok());
  const std::string& m = o.status().message();
  EXPECT_NE(m.find(p + ":1:16: 'server.port': expected an integer in [0, 65535], got \"70000\""), std::string::npos) << m;
  EXPECT_NE(m.find("'tls.key': missing"), std::string::npos) << m;
  EXPECT_NE(m.find("'links[0].spec.source.dim': expected an integer in [1, 1048576], got \"0\""), std::string::npos) << m;
  EXPECT_NE(m.find("'links[0].round.quorum': must not exceed min_edges (2)"), std::string::npos) << m;
  EXPECT_NE(m.find("'links[1].id': duplicate link id 'x'"), std::string::npos) << m;
  EXPECT_NE(m.find("'links[1].colour': unknown key"), std::string::npos) << m;
}

TEST(OptionsTest, SecureAggregationIsConfiguredPerLinkAndChecked) {
  const std::string head =
      "server: {port: 1}\ntls: {ca: a.pem, cert: b.pem, key: c.pem}\n"
      "links:\n"
      "  - id: x\n"
      "    spec: {source: {kind: vector, dim: 2}, target: {kind: vector, dim: 3}, task: single_label}\n";
  std::string p = WriteTemp("secagg-cloud.yaml", head +
                            "    round: {min_edges: 5, quorum: 4}\n"
                            "    secure_aggregation: {enabled: true, degree: 4, threshold: 3, clip: 2.5, phase_timeout_s: 7}\n"
                            "  - id: y\n"
                            "    spec: {source: {kind: vector, dim: 2}, target: {kind: vector, dim: 3}, task: single_label}\n");
  auto o = cloud::LoadCloudOptions(p);
  fs::remove(p);
  ASSERT_TRUE(o.ok()) << o.status();
  const auto& s = o->links[0].secure_aggregation;
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.degree, 4);
  EXPECT_EQ(s.threshold, 3);
  EXPECT_EQ(s.frac_bits, 16);
  EXPECT_DOUBLE_EQ(s.clip, 2.5);
  EXPECT_DOUBLE_EQ(s.phase_timeout_s, 7);
  EXPECT_FALSE(o->links[1].secure_aggregation.enabled);

  p = WriteTemp("secagg-bad.yaml", head +
                "    round: {min_edges: 2, quorum: 2, aggregation: sample_weighted}\n"
                "    secure_aggregation: {enabled: true, degree: 3, frac_bits: 31}\n");
  auto bad = cloud::LoadCloudOptions(p);
  fs::remove(p);
  ASSERT_FALSE(bad.ok());
  const std::string& m = bad.status().message();
  EXPECT_NE(m.find("'links[0].secure_aggregation.degree': must be even"), std::string::npos) << m;
  EXPECT_NE(m.find("'links[0].secure_aggregation.frac_bits'"), std::string::npos) << m;
  EXPECT_NE(m.find("'links[0].round.min_edges': secure aggregation needs min_edges >= 3"), std::string::npos) << m;
  EXPECT_NE(m.find("'links[0].round.aggregation': secure aggregation supports mean only"), std::string::npos) << m;

  p = WriteTemp("secagg-edge.yaml",
                "site: s\nmodels:\n  - {name: m, kind: hog}\n  - {name: n, kind: mog2}\n"
                "cloud:\n  url: wss://127.0.0.1:1/v1/federation\n  ca: a\n  cert: b\n  key: c\n"
                "  links:\n    - {id: x, source: m, target: n, secure_aggregation: true}\n"
                "    - {id: y, source: n, target: m}\n");
  auto e = edge::LoadEdgeOptions(p);
  fs::remove(p);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->learning.federation.links[0].secure_aggregation);
  EXPECT_FALSE(e->learning.federation.links[1].secure_aggregation);
}

TEST(OptionsTest, BadEdgeUrlIsExplained) {
  std::string p = WriteTemp("bad-edge.yaml",
                            "site: s\ndevice: tpu\ncloud: {url: 'ws://h:1/v1/federation', ca: a, cert: b, key: c}\n");
  auto o = edge::LoadEdgeOptions(p);
  fs::remove(p);
  ASSERT_FALSE(o.ok());
  const std::string& m = o.status().message();
  EXPECT_NE(m.find("'device': expected one of cpu, cuda, cuda:N, auto, got \"tpu\""), std::string::npos) << m;
  EXPECT_NE(m.find("plain ws:// is not allowed"), std::string::npos) << m;
}

TEST(OptionsTest, ShippedEdgeConfigsFederateAndSample) {
  auto o = edge::LoadEdgeOptions(std::string(MLINK_SOURCE_DIR) + "/configs/edge-site-a.yaml");
  ASSERT_TRUE(o.ok()) << o.status();
  ASSERT_EQ(o->learning.federation.links.size(), 1u);
  EXPECT_EQ(o->learning.federation.links[0].id, "hog->fullbody");
  EXPECT_TRUE(o->learning.federation.enabled);
  EXPECT_EQ(o->learning.sampling.policy, "uncertainty");
  EXPECT_DOUBLE_EQ(o->learning.sampling.budget, 0.1);
}

TEST(OptionsTest, LinkThreadsAndConnectTimeoutAreReadAndChecked) {
  auto shipped = edge::LoadEdgeOptions(std::string(MLINK_SOURCE_DIR) + "/configs/edge-site-a.yaml");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  EXPECT_EQ(shipped->serving.link_threads, 1);  // the default: training shares the machine with serving
  const std::string head = "site: s\nmodels:\n  - {name: m, kind: hog}\n  - {name: n, kind: mog2}\n";
  auto two = edge::ParseEdgeOptions(head + "serving: {link_threads: 2}\n", "two.yaml");
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->serving.link_threads, 2);
  auto all = edge::ParseEdgeOptions(head + "serving: {link_threads: 0}\n", "all.yaml");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->serving.link_threads, 0);
  const std::string cloud = "cloud: {url: 'wss://127.0.0.1:1/v1/federation', ca: a, cert: b, key: c";
  EXPECT_EQ(two->learning.federation.connect_timeout_s, 10);  // the default
  auto slow = edge::ParseEdgeOptions(head + cloud + ", connect_timeout_s: 45}\n", "slow.yaml");
  ASSERT_TRUE(slow.ok()) << slow.status();
  EXPECT_EQ(slow->learning.federation.connect_timeout_s, 45);
  auto zero = edge::ParseEdgeOptions(head + cloud + ", connect_timeout_s: 0}\n", "zero.yaml");
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("connect_timeout_s"), std::string::npos) << zero.status();
  auto bad = edge::ParseEdgeOptions(head + "serving: {link_threads: -1}\n", "bad.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.yaml"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("link_threads"), std::string::npos) << bad.status();
}

TEST(OptionsTest, BadLearningConfigNamesEveryProblem) {
  std::string p = WriteTemp("learn.yaml",
                            "site: s\n"
                            "models:\n  - {name: m, kind: hog}\n"
                            "learning:\n  sampling: {policy: sometimes, budget: 2}\n"
                            "oracle: {model: m}\n"
                            "cloud:\n  url: wss://127.0.0.1:1/v1/federation\n  ca: a\n  cert: b\n  key: c\n"
                            "  links:\n    - {id: x, source: nope, target: m}\n");
  auto o = edge::LoadEdgeOptions(p);
  ASSERT_FALSE(o.ok());
  const std::string m = o.status().message();
  EXPECT_NE(m.find("policy"), std::string::npos) << m;
  EXPECT_NE(m.find("budget"), std::string::npos) << m;
  EXPECT_NE(m.find("classes"), std::string::npos) << m;   // single-label oracle without classes
  EXPECT_NE(m.find("'nope' is not one of the site's models"), std::string::npos) << m;
  fs::remove(p);
}

TEST(EndpointTest, ParsesFederationUrls) {
  auto a = protocol::ParseFederationUrl("wss://agg.example:9443/v1/federation");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "agg.example");
  EXPECT_EQ(a->port, 9443);
  auto b = protocol::ParseFederationUrl("wss://[::1]");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 443);
  EXPECT_EQ(b->ToString(), "wss://[::1]:443/v1/federation");
  EXPECT_FALSE(protocol::ParseFederationUrl("https://x:1").ok());
  EXPECT_FALSE(protocol::ParseFederationUrl("wss://x:0").ok());
  EXPECT_FALSE(protocol::ParseFederationUrl("wss://:5").ok());
}

}  // namespace
}  // namespace mlink
