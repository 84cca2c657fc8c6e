// Metrics of the paper, on plain columns. Each takes predictions and reference outputs of the
// same format; `Performance` maps a task to the one number p in [0, 1] that the scheduler uses.
#pragma once

#include <cstdint>
#include <vector>

#include "mlink/link/data.h"

namespace mlink::link {

// Share of rows whose argmax agrees (single-label; soft references allowed).
double Accuracy(const Column& pred, const Column& ref);
// Mean over classes of average precision; a reference value >= 0.5 counts as positive. Classes
// without a positive row are left out of the mean (0 if none has one).
double MeanAveragePrecision(const Column& scores, const Column& ref);
// Mean IoU of [x1, y1, x2, y2] boxes; an empty union counts as IoU 1 if both boxes are empty.
double MeanIoU(const Column& pred, const Column& ref);
// Mean absolute error over all values.
double MeanAbsoluteError(const Column& pred, const Column& ref);
// Share of values with |pred - ref| < 0.5 (the paper's count accuracy).
double CountAccuracy(const Column& pred, const Column& ref);
// Word error rate: total token edit distance over total reference length.
double WordErrorRate(const Column& pred, const Column& ref);
// Token edit distance (Levenshtein).
int EditDistance(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

struct Evaluation {
  double metric = 0;       // the task's own metric (accuracy, mAP, IoU, MAE, count acc, WER)
  const char* metric_name = "";
  double performance = 0;  // p in [0, 1], higher is better
};

// The task's metric and p: accuracy, mAP, IoU and count accuracy are p themselves; regression
// uses p = clip(1 - MAE / MAD(ref)); sequences use p = clip(1 - WER).
Evaluation Evaluate(TaskKind task, const Column& pred, const Column& ref);

}  // namespace mlink::link
