#include "mlink/link/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace mlink::link {

namespace {
std::size_t Argmax(const float* p, int d) { return static_cast<std::size_t>(std::max_element(p, p + d) - p); }
double Clip01(double v) { return std::isfinite(v) ? std::min(1.0, std::max(0.0, v)) : 0.0; }
}  // namespace

double Accuracy(const Column& pred, const Column& ref) {
  const std::size_t n = std::min(pred.rows(), ref.rows());
  if (n == 0) return 0;
  std::size_t hit = 0;
  for (std::size_t i = 0; i < n; ++i) hit += Argmax(pred.row(i), pred.dim) == Argmax(ref.row(i), ref.dim);
  return static_cast<double>(hit) / static_cast<double>(n);
}

double MeanAveragePrecision(const Column& scores, const Column& ref) {
  const std::size_t n = std::min(scores.rows(), ref.rows());
  const int d = std::min(scores.dim, ref.dim);
  double sum = 0;
  int classes = 0;
  std::vector<std::size_t> order(n);
  for (int c = 0; c < d; ++c) {
    std::size_t positives = 0;
    for (std::size_t i = 0; i < n; ++i) positives += ref.row(i)[c] >= 0.5f;
    if (positives == 0) continue;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return scores.row(a)[c] > scores.row(b)[c]; });
    double ap = 0;
    std::size_t hits = 0;
    for (std::size_t k = 0; k < n; ++k) {
      if (ref.row(order[k])[c] >= 0.5f) {
        ++hits;
        ap += static_cast<double>(hits) / static_cast<double>(k + 1);
      }
    }
    sum += ap / static_cast<double>(positives);
    ++classes;
  }
  return classes ? sum / classes : 0.0;
}

double MeanIoU(const Column& pred, const Column& ref) {
  const std::size_t n = std::min(pred.rows(), ref.rows());
  if (n == 0 || pred.dim < 4 || ref.dim < 4) return 0;
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float* a = pred.row(i);
    const float* b = ref.row(i);
    auto area = [](const float* x) { return std::max(0.f, x[2] - x[0]) * std::max(0.f, x[3] - x[1]); };
    float iw = std::max(0.f, std::min(a[2], b[2]) - std::max(a[0], b[0]));
    float ih = std::max(0.f, std::min(a[3], b[3]) - std::max(a[1], b[1]));
    double inter = static_cast<double>(iw) * ih;
    double uni = area(a) + area(b) - inter;
    sum += uni > 0 ? inter / uni : (area(a) == 0 && area(b) == 0 ? 1.0 : 0.0);
  }
  return sum / static_cast<double>(n);
}

double MeanAbsoluteError(const Column& pred, const Column& ref) {
  const std::size_t m = std::min(pred.values.size(), ref.values.size());
  if (m == 0) return 0;
  double s = 0;
  for (std::size_t i = 0; i < m; ++i) s += std::fabs(static_cast<double>(pred.values[i]) - ref.values[i]);
  return s / static_cast<double>(m);
}

double CountAccuracy(const Column& pred, const Column& ref) {
  const std::size_t m = std::min(pred.values.size(), ref.values.size());
  if (m == 0) return 0;
  std::size_t hit = 0;
  for (std::size_t i = 0; i < m; ++i) hit += std::fabs(static_cast<double>(pred.values[i]) - ref.values[i]) < 0.5;
  return static_cast<double>(hit) / static_cast<double>(m);
}

int EditDistance(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
  std::iota(prev.begin(), prev.end(), 0);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int>(i);
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

double WordErrorRate(const Column& pred, const Column& ref) {
  const std::size_t n = std::min(pred.seqs.size(), ref.seqs.size());
  double edits = 0, words = 0;
  for (std::size_t i = 0; i < n; ++i) {
    edits += EditDistance(pred.seqs[i], ref.seqs[i]);
    words += static_cast<double>(ref.seqs[i].size());
  }
  return words > 0 ? edits / words : (edits > 0 ? 1.0 : 0.0);
}

Evaluation Evaluate(TaskKind task, const Column& pred, const Column& ref) {
  Evaluation e;
  switch (task) {
    case TaskKind::kSingleLabel:
      e.metric = Accuracy(pred, ref);
      e.metric_name = "accuracy";
      e.performance = e.metric;
      break;
    case TaskKind::kMultiLabel:
      e.metric = MeanAveragePrecision(pred, ref);
      e.metric_name = "mAP";
      e.performance = e.metric;
      break;
    case TaskKind::kBox:
      e.metric = MeanIoU(pred, ref);
      e.metric_name = "IoU";
      e.performance = e.metric;
      break;
    case TaskKind::kCount:
      e.metric = CountAccuracy(pred, ref);
      e.metric_name = "count_accuracy";
      e.performance = e.metric;
      break;
    case TaskKind::kRegression: {
      e.metric = MeanAbsoluteError(pred, ref);
      e.metric_name = "MAE";
      // Mean absolute deviation of the reference around its mean: what predicting the mean scores.
      double mean = 0;
      for (float v : ref.values) mean += v;
      mean /= std::max<std::size_t>(1, ref.values.size());
      double mad = 0;
      for (float v : ref.values) mad += std::fabs(v - mean);
      mad /= std::max<std::size_t>(1, ref.values.size());
      e.performance = mad > 0 ? Clip01(1.0 - e.metric / mad) : (e.metric == 0 ? 1.0 : 0.0);
      break;
    }
    case TaskKind::kSequence:
      e.metric = WordErrorRate(pred, ref);
      e.metric_name = "WER";
      e.performance = Clip01(1.0 - e.metric);
      break;
  }
  return e;
}

}  // namespace mlink::link
