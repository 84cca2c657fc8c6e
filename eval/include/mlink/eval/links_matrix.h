// The pairwise link performance matrix on the Fashion-MNIST model zoo (the paper's Table 3
// form): the zoo's models are trained on `model_rows` training images, all k(k-1) links on the
// models' outputs for the next `link_rows` images, and each link is scored on `test_rows` test
// images with its target's metric.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mlink/common/status.h"

namespace mlink::eval {

struct LinksMatrixOptions {
  std::string fmnist_dir;  // DefaultFashionMnistDir() if empty
  int model_rows = 10000;
  int link_rows = 3000;
  int test_rows = 2000;
  int epochs = 100;
  uint64_t seed = 1;
  int threads = 0;  // link training threads (0 = one per core); the matrix is the same for any count
};

struct LinksMatrix {
  std::vector<std::string> models;   // the zoo's models
  std::vector<std::string> metrics;  // each model's metric as a target (accuracy, mAP, ...)
  // value[target][source]: the link's metric on the test images; NaN on the diagonal.
  std::vector<std::vector<double>> value;
  // 1 where a higher metric is better (all but WER).
  std::vector<bool> higher_is_better;
  int link_rows = 0, test_rows = 0, epochs = 0;
  double train_seconds = 0;  // training the links
};

// Progress lines go to the log.
Result<LinksMatrix> RunLinksMatrix(const LinksMatrixOptions& options);

// Rows are targets (with their metric), columns sources.
std::string LinksMarkdown(const LinksMatrix& m);

}  // namespace mlink::eval
