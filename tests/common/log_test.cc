#include "mlink/common/log.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace mlink::log {
namespace {

std::string ReadAll(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(LogTest, TextAndJsonLinesCarryFields) {
  std::string path = (std::filesystem::temp_directory_path() / ("mlink-log-" + std::to_string(::getpid()))).string();
  std::filesystem::remove(path);
  ASSERT_TRUE(SetFile(path));
  SetLevel(Level::kInfo);
  SetFormat(Format::kText);
  MLOG_INFO("cloud", "round closed").Kv("link", "a b").Kv("round", 3).Kv("ok", true);
  MLOG_DEBUG("cloud", "hidden").Kv("x", 1);
  SetFormat(Format::kJson);
  MLOG_WARN("edge", "slow \"frame\"").Kv("ms", 12.5);
  ASSERT_TRUE(SetFile(""));
  SetFormat(Format::kText);
  std::string text = ReadAll(path);
  std::filesystem::remove(path);
  EXPECT_NE(text.find("INFO  cloud: round closed link=\"a b\" round=3 ok=true\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("hidden"), std::string::npos) << "debug lines are dropped at info level";
  EXPECT_NE(text.find("\"level\":\"warn\",\"component\":\"edge\",\"msg\":\"slow \\\"frame\\\"\",\"ms\":12.5}"),
            std::string::npos)
      << text;
}

TEST(LogTest, ParsesLevelsAndFormats) {
  Level l;
  EXPECT_TRUE(ParseLevel("WARN", &l));
  EXPECT_EQ(l, Level::kWarn);
  EXPECT_FALSE(ParseLevel("loud", &l));
  Format f;
  EXPECT_TRUE(ParseFormat("json", &f));
  EXPECT_EQ(f, Format::kJson);
  EXPECT_FALSE(ParseFormat("xml", &f));
}

}  // namespace
}  // namespace mlink::log
