// `mlink-eval report` end to end with small settings: the real binary records short traces of
// vtest.avi and Megamind.avi, runs every experiment and writes report.md with PNG plots. The
// report must hold every section with a numeric table, and every image it references must be a
// real PNG (signature, IHDR size) that decodes to more than one colour. The recorded trace then
// checks the Table 5 experiment's invariants directly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "mlink/eval/schedule.h"

namespace mlink::eval {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

uint32_t BigEndian32(const std::string& b, std::size_t at) {
  return (uint32_t(uint8_t(b[at])) << 24) | (uint32_t(uint8_t(b[at + 1])) << 16) |
         (uint32_t(uint8_t(b[at + 2])) << 8) | uint32_t(uint8_t(b[at + 3]));
}

// The text of section `title` (from its "## " heading to the next one).
std::string SectionText(const std::string& md, const std::string& title) {
  const std::size_t at = md.find("## " + title);
  if (at == std::string::npos) return "";
  const std::size_t end = md.find("\n## ", at + 3);
  return md.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// Table rows ("| ... |") of a section that carry at least one decimal number in a cell.
int NumericRows(const std::string& section) {
  static const std::regex cell(R"(\|\s*\**-?[0-9]+\.[0-9]+)");
  int rows = 0;
  std::istringstream in(section);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("|", 0) == 0 && std::regex_search(line, cell)) ++rows;
  }
  return rows;
}

class EvalReport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(
        (fs::temp_directory_path() / ("mlink-report-" + std::to_string(::getpid()))).string());
    fs::create_directories(*dir_);
    const std::string cmd =
        std::string(MLINK_EVAL_BIN) + " --out " + *dir_ +
        " --link-rows 200 --test-rows 200 --epochs 3 report --zoo-rows 1000"
        " --adapt-seeds 1 --adapt-shares 0.05 --adapt-shifts rotate:30,washout:0.4:20"
        " --domain-rows 1000 --adapt-epochs 5"
        " --rounds 2 --federate-targets washout:0.45:20 --site-images 400 --target-images 400"
        " --target-labels 100"
        " --vtest-frames 60 --megamind-frames 30 --online-init-frames 20 --online-segment-frames 20"
        " --online-epochs 3 --budgets 0.3,0.6 --train-share 0.4 --schedule-epochs 20"
        " --sim-instances 20 > " +
        *dir_ + "/stdout.txt 2> " + *dir_ + "/log.txt";
    rc_ = std::system(cmd.c_str());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  // The end of the run's log, where a failure is reported.
  static std::string Log() {
    const std::string log = ReadFile(*dir_ + "/log.txt");
    return log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
  }
  static std::string* dir_;
  static int rc_;
};
std::string* EvalReport::dir_ = nullptr;
int EvalReport::rc_ = -1;

TEST_F(EvalReport, WritesEverySectionWithNumericTables) {
  ASSERT_EQ(rc_, 0) << Log();
  const std::string md = ReadFile(*dir_ + "/report.md");
  ASSERT_FALSE(md.empty());
  EXPECT_EQ(md.find("Failed"), std::string::npos) << md;
  const char* sections[] = {
      "Pairwise link performance on Fashion-MNIST (Table 3 form)",
      "Oracle links under domain shift (Table 4 form)",
      "Cross-domain aggregation and local-global fusion (Fig. 8 form)",
      "Online training policies on recorded video (Fig. 6 form)",
      "Scheduling vs Standalone at several budgets on recorded video (Table 5 form)",
      "Scheduling simulation on random problems (Fig. 10 form)"};
  // Table 3: 7 target rows; Table 4: Source, Shift, one share; Fig. 8: 7 rows + by-round row;
  // Fig. 6: 4 segments + mean + share; Table 5: 2 budgets x 2 videos; Fig. 10: 6 budgets x 2.
  const int min_rows[] = {7, 3, 8, 6, 4, 12};
  for (int i = 0; i < 6; ++i) {
    const std::string s = SectionText(md, sections[i]);
    ASSERT_FALSE(s.empty()) << sections[i];
    EXPECT_GE(NumericRows(s), min_rows[i]) << sections[i] << "\n" << s;
    EXPECT_NE(s.find("Run time:"), std::string::npos) << sections[i];
  }
  // The optimum's ratio to itself is exactly 1 in every budget row of the simulation.
  const std::string sim = SectionText(md, sections[5]);
  EXPECT_GE(std::count(sim.begin(), sim.end(), '\n'), 14);
  std::regex optimum_cell(R"(\| [0-9]+% \| [0-9]+ \| [0-9.]+ \(1\.000\) \|)");
  EXPECT_EQ(std::distance(std::sregex_iterator(sim.begin(), sim.end(), optimum_cell),
                          std::sregex_iterator()),
            12)
      << sim;
  // The stdout line names the report and its 9 plots.
  EXPECT_NE(ReadFile(*dir_ + "/stdout.txt").find("report: " + *dir_ + "/report.md (9 plots"),
            std::string::npos);
}

TEST_F(EvalReport, EveryReferencedImageIsARealPng) {
  ASSERT_EQ(rc_, 0) << Log();
  const std::string md = ReadFile(*dir_ + "/report.md");
  std::regex image(R"(!\[[^\]]*\]\(([^)]+)\))");
  std::set<std::string> seen;
  for (auto it = std::sregex_iterator(md.begin(), md.end(), image); it != std::sregex_iterator();
       ++it) {
    seen.insert((*it)[1].str());
  }
  const std::set<std::string> expected = {
      "links.png",          "adapt.png",           "federate.png",         "online.png",
      "table5-vtest.png",   "table5-megamind.png", "sched-sim-normal.png", "sched-sim-beta.png",
      "sched-sim-ratio.png"};
  EXPECT_EQ(seen, expected);
  for (const auto& name : seen) {
    SCOPED_TRACE(name);
    const std::string path = *dir_ + "/" + name;
    const std::string bytes = ReadFile(path);
    ASSERT_GT(bytes.size(), 33u);
    EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
    EXPECT_EQ(bytes.substr(12, 4), "IHDR");
    const uint32_t width = BigEndian32(bytes, 16), height = BigEndian32(bytes, 20);
    EXPECT_GE(width, 400u);
    EXPECT_LE(width, 2000u);
    EXPECT_GE(height, 300u);
    EXPECT_LE(height, 2000u);
    cv::Mat img = cv::imread(path, cv::IMREAD_COLOR);
    ASSERT_FALSE(img.empty());
    EXPECT_EQ(img.cols, static_cast<int>(width));
    EXPECT_EQ(img.rows, static_cast<int>(height));
    // Not one colour: the drawn lines, bars and text leave many dark pixels on the white page.
    cv::Mat gray;
    cv::cvtColor(img, gray, cv::COLOR_BGR2GRAY);
    double lo = 0, hi = 0;
    cv::minMaxLoc(gray, &lo, &hi);
    EXPECT_LT(lo, 100);
    EXPECT_GT(hi, 200);
    EXPECT_GT(cv::countNonZero(gray < 128), 500);
    EXPECT_GT(cv::countNonZero(gray > 200), 5000);
  }
}

// On the trace the report recorded: the hindsight set bounds every rule (it is the best set under
// the budget scored on the same frames), Standalone's accuracy is the share of models it runs,
// and no rule spends more than the budget.
TEST_F(EvalReport, ScheduleRulesKeepToTheBudgetAndHindsightBoundsThem) {
  ASSERT_EQ(rc_, 0) << Log();
  ScheduleEvalOptions o;
  o.trace = *dir_ + "/traces/vtest-60.db";
  ASSERT_TRUE(fs::exists(o.trace));
  o.budget_fractions = {0.3, 0.6, 1.0};
  o.train_share = 0.4;
  o.epochs = 20;
  auto r = RunScheduleEval(o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->models.size(), 5u);
  EXPECT_EQ(r->train_frames + r->eval_frames, 60u);
  ASSERT_EQ(r->rows.size(), 3u);
  for (const auto& row : r->rows) {
    SCOPED_TRACE(row.fraction);
    ASSERT_EQ(row.rules.size(), 4u);
    EXPECT_EQ(row.rules[0].rule, "standalone");
    EXPECT_EQ(row.rules[3].rule, "hindsight");
    int runs = 0;
    for (bool a : row.rules[0].active) runs += a;
    EXPECT_DOUBLE_EQ(row.rules[0].accuracy, runs / 5.0);
    for (const auto& rule : row.rules) {
      EXPECT_LE(rule.cost_ms, row.budget_ms * (1 + 1e-9)) << rule.rule;
      EXPECT_LE(rule.accuracy, row.rules[3].accuracy + 1e-12) << rule.rule;
      EXPECT_GE(rule.accuracy, 0.2 - 1e-12) << rule.rule;  // at least one model runs
    }
  }
  // With the whole budget Standalone and the paper's rule run every model, and the best set is all
  // of them. (The marginal-gain rule may stop early once the predicted outputs look perfect.)
  for (int i : {0, 1, 3})
    EXPECT_DOUBLE_EQ(r->rows[2].rules[i].accuracy, 1.0) << r->rows[2].rules[i].rule;
}

}  // namespace
}  // namespace mlink::eval
