// Frame sources: image folders (with an unreadable file), a video file, a stream that is down.
#include "mlink/edge/source.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <thread>

namespace mlink::edge {
namespace {

namespace fs = std::filesystem;

TEST(SourceTest, FolderInOrderSkipsUnreadableImagesAndScales) {
  fs::path dir = fs::temp_directory_path() / ("mlink-folder-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (int i = 0; i < 3; ++i) {
    cv::Mat img(40, 60, CV_8UC3, cv::Scalar(i * 50, 0, 0));
    cv::imwrite((dir / ("f" + std::to_string(i) + ".png")).string(), img);
  }
  std::ofstream(dir / "f1b.png") << "not an image";
  std::ofstream(dir / "notes.txt") << "ignored";
  SourceOptions o;
  o.uri = dir.string();
  o.scale = 0.5;
  auto src = FrameSource::Open(o);
  ASSERT_TRUE(src.ok()) << src.status();
  std::vector<int> blues;
  while (true) {
    auto f = (*src)->Next();
    ASSERT_TRUE(f.ok());
    if (!f->has_value()) break;
    EXPECT_EQ((*f)->image.cols, 30);
    EXPECT_EQ((*f)->image.rows, 20);
    blues.push_back((*f)->image.at<cv::Vec3b>(0, 0)[0]);
  }
  EXPECT_EQ(blues, (std::vector<int>{0, 50, 100}));
  EXPECT_EQ((*src)->dropped(), 1) << "the unreadable f1b.png";
  fs::remove_all(dir);
}

TEST(SourceTest, MissingThingsAreClearErrors) {
  SourceOptions o;
  o.uri = "/nonexistent/clip.avi";
  auto missing = FrameSource::Open(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/clip.avi"), std::string::npos);
  fs::path bad = fs::temp_directory_path() / ("mlink-bad-" + std::to_string(::getpid()) + ".avi");
  std::ofstream(bad) << "garbage, not a video";
  o.uri = bad.string();
  auto undecodable = FrameSource::Open(o);
  ASSERT_FALSE(undecodable.ok());
  EXPECT_NE(undecodable.status().message().find("cannot decode"), std::string::npos) << undecodable.status();
  fs::remove(bad);
  fs::path empty = fs::temp_directory_path() / ("mlink-empty-" + std::to_string(::getpid()));
  fs::create_directories(empty);
  o.uri = empty.string();
  EXPECT_NE(FrameSource::Open(o).status().message().find("holds no images"), std::string::npos);
  fs::remove_all(empty);
}

TEST(SourceTest, DeadStreamKeepsReconnectingAndNeverEnds) {
  SourceOptions o;
  o.uri = "http://127.0.0.1:1/camera.mjpg";  // nothing listens on port 1
  o.reconnect_initial_s = 0.05;
  o.reconnect_max_s = 0.2;
  auto src = FrameSource::Open(o);
  ASSERT_TRUE(src.ok()) << "a camera that is down now is not an error at start";
  auto f = (*src)->Next(0.5);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(f.status().message().find("127.0.0.1:1"), std::string::npos);
  // It keeps trying: wait for two more attempts (each one is slow under load: OpenCV tries
  // several back-ends), with a generous deadline so a busy machine does not fail the test.
  const int before = (*src)->reconnects();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((*src)->reconnects() < before + 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GE((*src)->reconnects(), before + 2);
}

}  // namespace
}  // namespace mlink::edge
