// Fashion-MNIST (Debian package dataset-fashion-mnist) and a zoo of real black-box models on it:
// several small classifiers trained here, plus deterministic "detectors", each producing one
// output column. These are the ground-truth workloads for link tests, benchmarks and mlink-eval.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mlink/common/status.h"
#include "mlink/link/batched.h"

namespace mlink::eval {

struct FashionMnist {
  int rows = 0;
  std::vector<uint8_t> pixels;  // rows * 784, row-major 28x28
  std::vector<uint8_t> labels;  // rows
};

// $MLINK_FMNIST_DIR, else /usr/share/datasets/fashion-mnist.
std::string DefaultFashionMnistDir();
// Reads the gzip'd idx files of the train or test split; limit > 0 keeps the first rows.
Result<FashionMnist> LoadFashionMnist(const std::string& dir, bool train, int limit = 0);

struct ZooModel {
  std::string name;
  link::ModelOutputSpec spec;
};

struct Zoo {
  std::vector<ZooModel> models;
  // Train a classifier (for the zoo's own models) on these rows, then run every model on rows.
  std::vector<link::Column> Run(const FashionMnist& data) const;
  std::vector<std::vector<float>> weights;  // trained classifier weights, one per learnt model
};

// Trains the zoo's learnt models on `train` (a few epochs, seconds on a CPU) and describes:
//   0 classifier  10-class softmax on 28x28 pixels          vector(10), single_label
//   1 group       4-group softmax on 7x7 pooled pixels       vector(4),  single_label
//   2 attributes  3 sigmoid attributes on 14x14 pixels      vector(3),  multi_label
//   3 ink         share of inked pixels                      vector(1),  regression
//   4 box         bounding box of inked pixels, normalised  vector(4),  box
//   5 caption     class name of the classifier's argmax      sequence,   sequence
//   6 caption14   class name from a 14x14 classifier         sequence,   sequence
Result<Zoo> TrainZoo(const FashionMnist& train, uint64_t seed = 1);

// The word vocabulary of class-name captions (ids from 3).
const std::vector<std::string>& CaptionWords();

}  // namespace mlink::eval
