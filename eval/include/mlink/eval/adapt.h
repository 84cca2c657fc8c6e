// Oracle links on real data (paper Section 4.2, Table 4 form): a CNN trained on the original
// Fashion-MNIST images is the deployed black box; real domain shifts applied to the test images
// (rotation, washed-out contrast with sensor noise, inversion, blur) degrade it; a link from its
// class probabilities to the oracle node (ground truth), trained on a few labelled images of the
// shifted domain, adapts it without touching the CNN.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mlink/common/status.h"
#include "mlink/eval/fmnist.h"
#include "mlink/link/data.h"
#include "mlink/link/link.h"

namespace mlink::eval {

// ---- domain shifts ----------------------------------------------------------------------------

enum class ShiftKind {
  kRotate,   // amount = degrees, counter-clockwise about the image centre, black border
  kWashOut,  // amount = contrast c: x -> (1 - c) * 128 + c * x, plus Gaussian noise (sigma)
  kInvert,   // x -> 255 - x (amount unused)
  kBlur,     // amount = Gaussian sigma in pixels
};

struct DomainShift {
  std::string name;  // short column name: the ParseShift text, e.g. "rotate:30"
  ShiftKind kind = ShiftKind::kRotate;
  double amount = 0;
  double noise_sigma = 0;  // kWashOut only, in grey levels
};

// rotate:30, washout:0.4:20, invert, blur:2 (the Table 4 run and its test).
std::vector<DomainShift> DefaultShifts();
// Human-readable description of a shift, for reports.
std::string DescribeShift(const DomainShift& shift);
// Parses "rotate:DEGREES", "washout:CONTRAST[:NOISE_SIGMA]", "invert", "blur:SIGMA"; the name is
// the text itself. The error says which form was expected.
Result<DomainShift> ParseShift(const std::string& text);

// The shifted copy of `images` (labels unchanged). Deterministic for a given seed (the noise).
FashionMnist ApplyShift(const FashionMnist& images, const DomainShift& shift, uint64_t seed);

// ---- the deployed classifier ------------------------------------------------------------------

// A TorchScript image classifier: input float [N, 1, 28, 28] with pixels / 255, output
// [N, 10] softmax probabilities (what eval/data/train_fmnist_cnn.py exports).
// Thread-safety: Run is const and may be called concurrently.
class ImageClassifier {
 public:
  static Result<std::unique_ptr<ImageClassifier>> Load(const std::string& path);
  ~ImageClassifier();
  ImageClassifier(const ImageClassifier&) = delete;
  ImageClassifier& operator=(const ImageClassifier&) = delete;

  // Class probabilities for every image, a Vector(10) column; runs in batches of `batch`.
  Result<link::Column> Run(const FashionMnist& images, int batch = 1000) const;

  struct Impl;

 private:
  explicit ImageClassifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Share of rows `idx` whose argmax of `probs` equals the label.
double ArgmaxAccuracy(const link::Column& probs, const std::vector<uint8_t>& labels,
                      const std::vector<std::size_t>& idx);
// Labels as a one-hot Vector(10) column: the oracle node's output.
link::Column OneHot(const std::vector<uint8_t>& labels);

// ---- the cached CNN ---------------------------------------------------------------------------

struct CnnOptions {
  std::string path;        // the TorchScript file; default DefaultCnnPath()
  std::string python;      // $MLINK_PYTHON, else the interpreter configured at build time
  std::string script;      // eval/data/train_fmnist_cnn.py in the source tree
  std::string fmnist_dir;  // DefaultFashionMnistDir()
  int epochs = 3;
  uint64_t seed = 1;
  // Receives each line the training script prints (progress, test accuracy).
  std::function<void(const std::string& line)> progress;
};
// $MLINK_CACHE_DIR/models/fmnist_cnn.pt; MLINK_CACHE_DIR defaults to $XDG_CACHE_HOME/mlink, else
// ~/.cache/mlink (as in scripts/setup).
std::string DefaultCnnPath();
CnnOptions DefaultCnnOptions();
// Returns options.path, training the CNN there first (a few minutes on two cores) if it is absent.
// The script writes the file atomically, so a concurrent reader never sees half a model.
Result<std::string> EnsureFmnistCnn(const CnnOptions& options);

// ---- the experiment ---------------------------------------------------------------------------

struct AdaptOptions {
  std::vector<DomainShift> shifts = DefaultShifts();
  // Labelled share of the target domain for each oracle-link row; the largest share's images
  // are the labelled pool, smaller shares are prefixes of it, the rest is the evaluation set.
  std::vector<double> label_shares = {0.01, 0.05, 0.10};
  std::vector<uint64_t> seeds = {1, 2, 3};  // split, shift noise and link initialisation
  link::TrainOptions train;                 // oracle-link training (the paper's defaults)
  // After each trained oracle link (for progress lines).
  std::function<void(const std::string& shift, double share, uint64_t seed, double accuracy)>
      progress;
};

struct MeanStd {
  double mean = 0;
  double stddev = 0;  // over seeds (population)
};

struct AdaptColumn {
  DomainShift shift;
  MeanStd source;               // the CNN on the unshifted evaluation images
  MeanStd shifted;              // the CNN on the shifted evaluation images
  std::vector<MeanStd> oracle;  // CNN + oracle link, one per label share
};

struct AdaptReport {
  std::vector<double> label_shares;
  std::vector<uint64_t> seeds;
  std::size_t domain_rows = 0;  // target-domain images (labelled pool + evaluation)
  std::size_t eval_rows = 0;    // held-out evaluation images per seed
  link::TrainOptions train;     // how the oracle links were trained
  std::vector<AdaptColumn> columns;
  double seconds = 0;
};

// Runs the experiment on `domain` (e.g. the Fashion-MNIST test split; disjoint from what the CNN
// was trained on). For each seed the rows are split once into a labelled pool and an evaluation
// set shared by every shift and share.
Result<AdaptReport> RunOracleAdaptation(const ImageClassifier& cnn, const FashionMnist& domain,
                                        const AdaptOptions& options);
// Table 4 form in Markdown: columns are shifts and their average, rows Source, Shift, Oracle link.
std::string AdaptMarkdown(const AdaptReport& report);

}  // namespace mlink::eval
