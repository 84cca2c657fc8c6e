// Test support: the real mlink-cloud binary as a child process, its log in a file.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

namespace mlink::testing {

class CloudProcess {
 public:
  // `in_child` runs in the child before exec (e.g. setrlimit, signal dispositions).
  CloudProcess(const std::string& binary, const std::string& config, const std::string& log,
               const std::function<void()>& in_child = nullptr)
      : log_(log) {
    std::filesystem::remove(log_);
    pid_ = fork();
    if (pid_ == 0) {
      FILE* f = std::freopen(log.c_str(), "w", stderr);
      (void)f;
      if (in_child) in_child();
      execl(binary.c_str(), binary.c_str(), "--config", config.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~CloudProcess() { Kill(SIGKILL); }
  CloudProcess(const CloudProcess&) = delete;
  CloudProcess& operator=(const CloudProcess&) = delete;

  // Waits for the "aggregator listening" line and returns its port (0 if the process exited or
  // did not listen within 15 s).
  uint16_t WaitPort() {
    const std::string marker = "aggregator listening federation=wss://127.0.0.1:";
    for (int i = 0; i < 300; ++i) {
      std::string text = Log();
      auto at = text.find(marker);
      if (at != std::string::npos)
        return static_cast<uint16_t>(std::stoi(text.substr(at + marker.size())));
      if (Exited()) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return 0;
  }
  pid_t pid() const { return pid_; }
  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void Kill(int sig) {
    if (pid_ > 0) {
      ::kill(pid_, sig);
      int st = 0;
      waitpid(pid_, &st, 0);
      status_ = st;
      pid_ = -1;
    }
  }
  // Waits up to `timeout_s` for the process to exit; its exit code, or -1 if it did not exit.
  int WaitExit(double timeout_s) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < end) {
      if (Exited()) return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

 private:
  bool Exited() {
    if (pid_ <= 0) return true;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = st;
      pid_ = -1;
      return true;
    }
    return false;
  }
  pid_t pid_ = -1;
  int status_ = 0;
  std::string log_;
};

}  // namespace mlink::testing
