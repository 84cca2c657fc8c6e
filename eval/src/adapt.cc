// The oracle-link experiment: domain shifts (OpenCV), the cached CNN (trained by a Python script
// on first use), and Table 4's rows. Torch-free: the CNN runs behind ImageClassifier.
#include "mlink/eval/adapt.h"

#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <sstream>

#ifndef MLINK_SOURCE_DIR
#error "MLINK_SOURCE_DIR must name the source tree (eval/CMakeLists.txt sets it)"
#endif
#ifndef MLINK_PYTHON
#error "MLINK_PYTHON must name the Python that has PyTorch (eval/CMakeLists.txt sets it)"
#endif

namespace mlink::eval {

namespace fs = std::filesystem;

// ---- domain shifts ----------------------------------------------------------------------------

std::vector<DomainShift> DefaultShifts() {
  // Each drops the CNN's accuracy by 0.2 to 0.7; rotation and inversion destroy the most
  // information in its outputs, so they are the hardest to recover from without touching it.
  return {
      {"rotate:30", ShiftKind::kRotate, 30.0, 0},
      {"washout:0.4:20", ShiftKind::kWashOut, 0.4, 20.0},
      {"invert", ShiftKind::kInvert, 0, 0},
      {"blur:2", ShiftKind::kBlur, 2.0, 0},
  };
}

std::string DescribeShift(const DomainShift& s) {
  std::ostringstream o;
  switch (s.kind) {
    case ShiftKind::kRotate:
      o << "rotated " << s.amount << " degrees about the centre (bilinear, black border)";
      break;
    case ShiftKind::kWashOut:
      o << "contrast " << s.amount << " towards grey 128, plus Gaussian noise sigma "
        << s.noise_sigma << " grey levels";
      break;
    case ShiftKind::kInvert:
      o << "inverted (255 - x)";
      break;
    case ShiftKind::kBlur:
      o << "Gaussian blur, sigma " << s.amount << " pixels";
      break;
  }
  return o.str();
}

Result<DomainShift> ParseShift(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream ss(text);
  for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
  const auto bad = [&] {
    return Status::InvalidArgument(
        "shift '" + text +
        "': expected rotate:DEGREES, washout:CONTRAST[:NOISE], invert or blur:SIGMA");
  };
  if (parts.empty()) return bad();
  std::vector<double> nums;
  for (std::size_t i = 1; i < parts.size(); ++i) {
    char* end = nullptr;
    const double v = std::strtod(parts[i].c_str(), &end);
    if (parts[i].empty() || *end != '\0' || !std::isfinite(v)) return bad();
    nums.push_back(v);
  }
  DomainShift s;
  s.name = text;
  if (parts[0] == "rotate" && nums.size() == 1) {
    s.kind = ShiftKind::kRotate;
    s.amount = nums[0];
  } else if (parts[0] == "washout" && (nums.size() == 1 || nums.size() == 2) && nums[0] > 0 &&
             nums[0] <= 1) {
    s.kind = ShiftKind::kWashOut;
    s.amount = nums[0];
    s.noise_sigma = nums.size() == 2 ? nums[1] : 0;
    if (s.noise_sigma < 0) return bad();
  } else if (parts[0] == "invert" && nums.empty()) {
    s.kind = ShiftKind::kInvert;
  } else if (parts[0] == "blur" && nums.size() == 1 && nums[0] > 0) {
    s.kind = ShiftKind::kBlur;
    s.amount = nums[0];
  } else {
    return bad();
  }
  return s;
}

FashionMnist ApplyShift(const FashionMnist& images, const DomainShift& shift, uint64_t seed) {
  FashionMnist out = images;
  cv::RNG rng(seed);
  const cv::Mat rotation = cv::getRotationMatrix2D(cv::Point2f(13.5f, 13.5f), shift.amount, 1.0);
  cv::Mat work(28, 28, CV_32F), noise(28, 28, CV_32F);
  for (int i = 0; i < images.rows; ++i) {
    const cv::Mat src(28, 28, CV_8U,
                      const_cast<uint8_t*>(images.pixels.data()) + std::size_t(i) * 784);
    cv::Mat dst(28, 28, CV_8U, out.pixels.data() + std::size_t(i) * 784);  // writes in place
    switch (shift.kind) {
      case ShiftKind::kRotate:
        cv::warpAffine(src, dst, rotation, dst.size(), cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                       cv::Scalar(0));
        break;
      case ShiftKind::kWashOut:
        src.convertTo(work, CV_32F, shift.amount, (1.0 - shift.amount) * 128.0);
        rng.fill(noise, cv::RNG::NORMAL, 0.0, shift.noise_sigma);
        work += noise;
        work.convertTo(dst, CV_8U);  // rounds and saturates to [0, 255]
        break;
      case ShiftKind::kInvert:
        cv::bitwise_not(src, dst);
        break;
      case ShiftKind::kBlur:
        cv::GaussianBlur(src, dst, cv::Size(0, 0), shift.amount, shift.amount, cv::BORDER_CONSTANT);
        break;
    }
  }
  return out;
}

// ---- helpers ----------------------------------------------------------------------------------

double ArgmaxAccuracy(const link::Column& probs, const std::vector<uint8_t>& labels,
                      const std::vector<std::size_t>& idx) {
  if (idx.empty()) return 0;
  std::size_t correct = 0;
  for (std::size_t i : idx) {
    const float* r = probs.row(i);
    const int best = static_cast<int>(std::max_element(r, r + probs.dim) - r);
    correct += best == labels[i];
  }
  return double(correct) / double(idx.size());
}

link::Column OneHot(const std::vector<uint8_t>& labels) {
  std::vector<float> v(labels.size() * 10, 0.0f);
  for (std::size_t i = 0; i < labels.size(); ++i) v[i * 10 + labels[i]] = 1.0f;
  return link::Column::Vectors(10, std::move(v));
}

// ---- the cached CNN ---------------------------------------------------------------------------

std::string DefaultCnnPath() {
  std::string cache;
  if (const char* c = std::getenv("MLINK_CACHE_DIR"); c && *c) {
    cache = c;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    cache = std::string(x) + "/mlink";
  } else {
    const char* home = std::getenv("HOME");
    cache = std::string(home && *home ? home : ".") + "/.cache/mlink";
  }
  return cache + "/models/fmnist_cnn.pt";
}

CnnOptions DefaultCnnOptions() {
  CnnOptions o;
  o.path = DefaultCnnPath();
  const char* py = std::getenv("MLINK_PYTHON");
  o.python = py && *py ? py : MLINK_PYTHON;
  o.script = std::string(MLINK_SOURCE_DIR) + "/eval/data/train_fmnist_cnn.py";
  o.fmnist_dir = DefaultFashionMnistDir();
  return o;
}

namespace {

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

Result<std::string> EnsureFmnistCnn(const CnnOptions& o) {
  std::error_code ec;
  if (fs::exists(o.path, ec)) return o.path;
  if (!fs::exists(o.script, ec)) {
    return Status::NotFound("the CNN training script " + o.script +
                            " is missing (is the source tree there?)");
  }
  const fs::path parent = fs::path(o.path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec)
    return Status::Unavailable("cannot create the model cache folder " + parent.string() + ": " +
                               ec.message());

  const std::string cmd = ShellQuote(o.python) + " " + ShellQuote(o.script) + " " +
                          ShellQuote(o.path) + " --fmnist " + ShellQuote(o.fmnist_dir) +
                          " --epochs " + std::to_string(o.epochs) + " --seed " +
                          std::to_string(o.seed) + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return Status::Unavailable("cannot start " + o.python + " to train the CNN");
  std::string last;
  char buf[1024];
  while (std::fgets(buf, sizeof(buf), pipe)) {
    std::string line(buf);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (line.empty()) continue;
    last = line;
    if (o.progress) o.progress(line);
  }
  const int rc = ::pclose(pipe);
  if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    return Status::Internal("training the Fashion-MNIST CNN with " + o.python + " " + o.script +
                            " failed (needs Debian's python3-torch and python3-numpy): " + last);
  }
  if (!fs::exists(o.path, ec))
    return Status::Internal("the CNN training script did not write " + o.path);
  return o.path;
}

// ---- the experiment ---------------------------------------------------------------------------

namespace {

MeanStd Summarise(const std::vector<double>& v) {
  MeanStd m;
  if (v.empty()) return m;
  m.mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - m.mean) * (x - m.mean);
  m.stddev = std::sqrt(ss / double(v.size()));
  return m;
}

// Fisher-Yates with a fixed generator, so splits are the same on every standard library.
std::vector<std::size_t> Permutation(std::size_t n, uint64_t seed) {
  std::vector<std::size_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  std::mt19937_64 gen(seed);
  for (std::size_t i = n; i > 1; --i) std::swap(p[i - 1], p[gen() % i]);
  return p;
}

}  // namespace

Result<AdaptReport> RunOracleAdaptation(const ImageClassifier& cnn, const FashionMnist& domain,
                                        const AdaptOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (options.label_shares.empty() || options.seeds.empty() || options.shifts.empty()) {
    return Status::InvalidArgument("adapt: shifts, label_shares and seeds must be non-empty");
  }
  const double max_share =
      *std::max_element(options.label_shares.begin(), options.label_shares.end());
  for (double s : options.label_shares) {
    if (!(s > 0 && s < 1)) return Status::InvalidArgument("adapt: label shares must lie in (0, 1)");
  }
  const std::size_t n = std::size_t(domain.rows);
  const std::size_t pool_rows = std::size_t(std::llround(max_share * double(n)));
  if (pool_rows < 10 || pool_rows >= n) {
    return Status::InvalidArgument("adapt: the domain is too small for label share " +
                                   std::to_string(max_share));
  }

  AdaptReport report;
  report.label_shares = options.label_shares;
  report.seeds = options.seeds;
  report.domain_rows = n;
  report.eval_rows = n - pool_rows;
  report.train = options.train;
  report.train.on_epoch = nullptr;

  link::LinkSpec spec;
  spec.source = link::OutputFormat::Vector(10);
  spec.target = link::OutputFormat::Vector(10);
  spec.task = link::TaskKind::kSingleLabel;
  const link::Column oracle = OneHot(domain.labels);
  MLINK_ASSIGN_OR_RETURN(const link::Column source_probs, cnn.Run(domain));

  const std::size_t k = options.shifts.size(), shares = options.label_shares.size();
  std::vector<double> source_acc;
  std::vector<std::vector<double>> shift_acc(k);
  std::vector<std::vector<std::vector<double>>> oracle_acc(
      k, std::vector<std::vector<double>>(shares));
  for (uint64_t seed : options.seeds) {
    const auto perm = Permutation(n, seed);
    const std::vector<std::size_t> pool(perm.begin(), perm.begin() + pool_rows);
    const std::vector<std::size_t> eval(perm.begin() + pool_rows, perm.end());
    const link::Column oracle_eval = oracle.Select(eval);
    source_acc.push_back(ArgmaxAccuracy(source_probs, domain.labels, eval));
    for (std::size_t s = 0; s < k; ++s) {
      const DomainShift& shift = options.shifts[s];
      MLINK_ASSIGN_OR_RETURN(const link::Column probs,
                             cnn.Run(ApplyShift(domain, shift, seed * 1000 + s)));
      shift_acc[s].push_back(ArgmaxAccuracy(probs, domain.labels, eval));
      const link::Column probs_eval = probs.Select(eval);
      for (std::size_t j = 0; j < shares; ++j) {
        const std::size_t rows = std::max<std::size_t>(
            2, std::min(pool_rows, std::size_t(std::llround(options.label_shares[j] * double(n)))));
        const std::vector<std::size_t> labelled(pool.begin(), pool.begin() + rows);
        MLINK_ASSIGN_OR_RETURN(auto link, link::Link::Create(spec, seed));
        link::TrainOptions train = options.train;
        train.seed = seed;
        MLINK_RETURN_IF_ERROR(
            link->Train(probs.Select(labelled), oracle.Select(labelled), train).status());
        MLINK_ASSIGN_OR_RETURN(const auto ev, link->Evaluate(probs_eval, oracle_eval));
        oracle_acc[s][j].push_back(ev.metric);
        if (options.progress)
          options.progress(shift.name, options.label_shares[j], seed, ev.metric);
      }
    }
  }
  for (std::size_t s = 0; s < k; ++s) {
    AdaptColumn c;
    c.shift = options.shifts[s];
    c.source = Summarise(source_acc);
    c.shifted = Summarise(shift_acc[s]);
    for (std::size_t j = 0; j < shares; ++j) c.oracle.push_back(Summarise(oracle_acc[s][j]));
    report.columns.push_back(std::move(c));
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

namespace {

std::string Cell(const MeanStd& m, bool with_std) {
  char buf[48];
  if (with_std) {
    std::snprintf(buf, sizeof(buf), "%.1f (±%.1f)", 100 * m.mean, 100 * m.stddev);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f", 100 * m.mean);
  }
  return buf;
}

}  // namespace

std::string AdaptMarkdown(const AdaptReport& r) {
  const bool with_std = r.seeds.size() > 1;
  std::ostringstream md;
  md << "## Oracle links under domain shift on Fashion-MNIST (Table 4 form)\n\n"
     << "Accuracy (%) of a small CNN trained on the original Fashion-MNIST training images, on "
     << r.eval_rows << " held-out test images per seed; mean" << (with_std ? " (± std)" : "")
     << " over " << r.seeds.size() << " seed" << (r.seeds.size() > 1 ? "s" : "")
     << ".\n\n| Method |";
  for (const auto& c : r.columns) md << " " << c.shift.name << " |";
  md << " Avg. |\n|---|";
  for (std::size_t i = 0; i <= r.columns.size(); ++i) md << "---|";
  md << "\n";
  auto row = [&](const std::string& name, auto pick) {
    md << "| " << name << " |";
    double sum = 0;
    for (const auto& c : r.columns) {
      const MeanStd m = pick(c);
      sum += m.mean;
      md << " " << Cell(m, with_std) << " |";
    }
    md << " " << Cell(MeanStd{sum / double(r.columns.size()), 0}, false) << " |\n";
  };
  row("Source (CNN, unshifted)", [](const AdaptColumn& c) { return c.source; });
  row("Shift (CNN, shifted)", [](const AdaptColumn& c) { return c.shifted; });
  for (std::size_t j = 0; j < r.label_shares.size(); ++j) {
    char name[96];
    std::snprintf(name, sizeof(name), "CNN + oracle link, %g%% labels (%zu)",
                  100 * r.label_shares[j],
                  std::size_t(std::llround(r.label_shares[j] * double(r.domain_rows))));
    row(name, [j](const AdaptColumn& c) { return c.oracle[j]; });
  }
  md << "\nShifts (applied to the test images with OpenCV):\n";
  for (const auto& c : r.columns)
    md << "- " << c.shift.name << ": " << DescribeShift(c.shift) << "\n";
  md << "\nThe oracle link maps the CNN's 10 class probabilities to the one-hot label (vec2vec, "
        "single_label), trained on the given share of the "
     << r.domain_rows << " shifted test images (RMSprop, lr " << r.train.learning_rate << ", batch "
     << r.train.batch_size << ", at most " << r.train.epochs << " epochs with early stopping on "
     << 100 * r.train.validation_share << "% of them) and evaluated on the other " << r.eval_rows
     << ", which no link saw. The CNN stays a black box. " << std::lround(r.seconds) << " s in all.\n";
  return md.str();
}

}  // namespace mlink::eval
