// PNG plots for the evaluation report, drawn by gnuplot (Debian gnuplot-nox, pngcairo terminal).
// Each function writes a self-contained gnuplot script (data inline) to a temporary file, runs
// gnuplot on it and checks that a PNG was written; gnuplot's own error text comes back in the
// Status.
//
// gnuplot is found as $MLINK_GNUPLOT, else `gnuplot` on PATH. Thread-safety: none needed; each
// call runs its own gnuplot process.
#pragma once

#include <string>
#include <vector>

#include "mlink/common/status.h"

namespace mlink::eval {

struct PlotSeries {
  std::string title;
  std::vector<double> x, y;  // same length; NaN in y leaves a gap
};

struct LinePlot {
  std::string title, xlabel, ylabel;
  std::vector<PlotSeries> series;
  double ymin = 0, ymax = 0;   // ymin == ymax: automatic range
  bool points = true;          // mark the data points
  std::vector<double> vlines;  // dashed vertical markers (e.g. a scene change)
};

// Grouped bars: one group per category, one bar per series (series[i].y[c] is category c).
struct BarPlot {
  std::string title, ylabel;
  std::vector<std::string> categories;
  std::vector<PlotSeries> series;  // x unused
  double ymin = 0, ymax = 0;
};

// A matrix of values in [vmin, vmax] with row and column labels; NaN cells are left blank.
// Each cell is annotated with its value.
struct Heatmap {
  std::string title, xlabel, ylabel;
  std::vector<std::string> rows, cols;
  std::vector<std::vector<double>> values;  // rows x cols
  double vmin = 0, vmax = 1;
};

// A histogram of values (each series its own outline) over [lo, hi] in `bins` bins, as shares.
struct Histogram {
  std::string title, xlabel;
  std::vector<PlotSeries> series;  // y holds the values; x unused
  double lo = 0, hi = 1;
  int bins = 20;
};

Status PlotLines(const LinePlot& plot, const std::string& png_path);
Status PlotBars(const BarPlot& plot, const std::string& png_path);
Status PlotHeatmap(const Heatmap& plot, const std::string& png_path);
Status PlotHistogram(const Histogram& plot, const std::string& png_path);

// Text made safe for a gnuplot double-quoted string (quotes, backslashes, underscores, @).
std::string GnuplotText(const std::string& s);

}  // namespace mlink::eval
