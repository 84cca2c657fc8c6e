#include "mlink/common/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace mlink::config {
namespace {

namespace fs = std::filesystem;

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mlink-config-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  fs::path dir_;
};

TEST_F(ConfigFileTest, ReadsTypedValuesAndResolvesPaths) {
  std::string p = Write("good.yaml",
                        "server:\n  port: 9443\n  name: plaza\ntls:\n  ca: certs/ca.pem\n"
                        "ratio: 0.25\nenabled: yes\ntags: [a, b]\nlinks:\n  - id: x\n  - id: y\n");
  auto root = LoadFile(p);
  ASSERT_TRUE(root.ok()) << root.status();
  Section r = *root;
  int port = 0;
  std::string name, ca;
  double ratio = 0;
  bool enabled = false;
  std::vector<std::string> tags;
  Section server = r.Child("server", true);
  server.Required("port", &port, 1, 65535);
  server.Optional("name", &name);
  r.Child("tls").RequiredPath("ca", &ca);
  r.Required("ratio", &ratio, 0.0, 1.0);
  r.Optional("enabled", &enabled);
  r.Optional("tags", &tags);
  std::vector<std::string> ids;
  for (Section l : r.List("links")) {
    std::string id;
    l.Required("id", &id);
    ids.push_back(id);
  }
  ASSERT_TRUE(r.Finish().ok()) << r.Finish();
  EXPECT_EQ(port, 9443);
  EXPECT_EQ(name, "plaza");
  EXPECT_EQ(ca, (dir_ / "certs/ca.pem").string());
  EXPECT_DOUBLE_EQ(ratio, 0.25);
  EXPECT_TRUE(enabled);
  EXPECT_EQ(tags, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ids, (std::vector<std::string>{"x", "y"}));
}

TEST_F(ConfigFileTest, ReportsEveryBadKeyWithFileAndLine) {
  std::string p = Write("bad.yaml", "server:\n  port: abc\n  prot: 3\nratio: 2.5\nmode: fast\n");
  auto root = LoadFile(p);
  ASSERT_TRUE(root.ok());
  Section r = *root;
  int port = 1;
  double ratio = 0;
  std::string mode, missing;
  r.Child("server").Required("port", &port, 1, 65535);
  r.Required("ratio", &ratio, 0.0, 1.0);
  r.Optional("mode", &mode, {"slow", "steady"});
  r.Required("tls_key", &missing);
  Status st = r.Finish();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  const std::string& m = st.message();
  EXPECT_NE(m.find("5 errors"), std::string::npos) << m;
  EXPECT_NE(m.find(p + ":2:9: 'server.port': expected an integer in [1, 65535], got \"abc\""), std::string::npos) << m;
  EXPECT_NE(m.find(p + ":3:3: 'server.prot': unknown key; expected one of {port}"), std::string::npos) << m;
  EXPECT_NE(m.find("'ratio': expected a number in [0, 1], got \"2.5\""), std::string::npos) << m;
  EXPECT_NE(m.find("'mode': expected one of {slow, steady}, got \"fast\""), std::string::npos) << m;
  EXPECT_NE(m.find("'tls_key': missing; expected a string"), std::string::npos) << m;
  EXPECT_EQ(port, 1) << "a bad value must not overwrite the default";
}

TEST_F(ConfigFileTest, WrongShapesAreErrors) {
  std::string p = Write("shape.yaml", "server: 5\nlinks: {a: 1}\nname: [1, 2]\n");
  Section r = *LoadFile(p);
  std::string name;
  r.Child("server", true);
  r.List("links");
  r.Optional("name", &name);
  std::string m = r.Finish().message();
  EXPECT_NE(m.find("'server': expected a mapping, got \"5\""), std::string::npos) << m;
  EXPECT_NE(m.find("'links': expected a list of mappings, got a mapping"), std::string::npos) << m;
  EXPECT_NE(m.find("'name': expected a string, got a list"), std::string::npos) << m;
}

TEST_F(ConfigFileTest, MissingFileAndSyntaxErrorsNameTheFile) {
  auto missing = LoadFile((dir_ / "nope.yaml").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.yaml"), std::string::npos);

  std::string p = Write("syntax.yaml", "server:\n  port: [1, 2\n");
  auto broken = LoadFile(p);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find(p + ":"), std::string::npos) << broken.status();
  EXPECT_NE(broken.status().message().find("YAML syntax error"), std::string::npos);

  std::string list = Write("list.yaml", "- a\n- b\n");
  auto not_map = LoadFile(list);
  ASSERT_FALSE(not_map.ok());
  EXPECT_NE(not_map.status().message().find("expected a mapping of keys at the top level"), std::string::npos);
}

}  // namespace
}  // namespace mlink::config
