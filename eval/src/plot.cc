#include "mlink/eval/plot.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mlink::eval {

namespace {

namespace fs = std::filesystem;

std::string Quote(const std::string& s) { return "\"" + GnuplotText(s) + "\""; }

// Shell single-quoting for a path.
std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string Num(double v) {
  if (!std::isfinite(v)) return "NaN";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

std::string Header(const std::string& png_path, const std::string& title, int width, int height) {
  std::ostringstream s;
  s << "set terminal pngcairo noenhanced size " << width << "," << height << " font \"Sans,10\"\n"
    << "set output " << Quote(png_path) << "\n"
    << "set title " << Quote(title) << "\n"
    << "set grid ytics lc rgb \"#dddddd\"\n";
  return s.str();
}

std::string YRange(double lo, double hi) {
  if (lo == hi) return "";
  return "set yrange [" + Num(lo) + ":" + Num(hi) + "]\n";
}

// Runs gnuplot on `script`; on success the PNG exists and is not empty.
Status Run(const std::string& script, const std::string& png_path) {
  std::error_code ec;
  fs::create_directories(
      fs::path(png_path).parent_path().empty() ? fs::path(".") : fs::path(png_path).parent_path(),
      ec);
  const fs::path tmp = fs::temp_directory_path() / ("mlink-plot-" + std::to_string(::getpid()) +
                                                    "-" + fs::path(png_path).stem().string());
  const std::string gp = tmp.string() + ".gp", err = tmp.string() + ".err";
  {
    std::ofstream f(gp);
    f << script;
    if (!f) return Status::Internal("cannot write the gnuplot script " + gp);
  }
  const char* env = std::getenv("MLINK_GNUPLOT");
  const std::string gnuplot = env && *env ? env : "gnuplot";
  fs::remove(png_path, ec);
  const int rc =
      std::system((ShellQuote(gnuplot) + " " + ShellQuote(gp) + " 2> " + ShellQuote(err)).c_str());
  std::ifstream ef(err);
  std::stringstream es;
  es << ef.rdbuf();
  fs::remove(gp, ec);
  fs::remove(err, ec);
  if (rc != 0) {
    return Status::Internal(
        "gnuplot failed for " + png_path +
        " (install gnuplot-nox, or set MLINK_GNUPLOT): " + es.str().substr(0, 500));
  }
  if (!fs::exists(png_path) || fs::file_size(png_path, ec) == 0) {
    return Status::Internal("gnuplot wrote no image to " + png_path + ": " +
                            es.str().substr(0, 500));
  }
  return Status::Ok();
}

}  // namespace

std::string GnuplotText(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

Status PlotLines(const LinePlot& plot, const std::string& png_path) {
  if (plot.series.empty()) return Status::InvalidArgument("line plot " + png_path + ": no series");
  std::ostringstream s;
  s << Header(png_path, plot.title, 680, 480) << "set xlabel " << Quote(plot.xlabel)
    << "\nset ylabel " << Quote(plot.ylabel) << "\nset key below\n"
    << YRange(plot.ymin, plot.ymax);
  int arrow = 1;
  for (double x : plot.vlines) {
    s << "set arrow " << arrow++ << " from " << Num(x) << ", graph 0 to " << Num(x)
      << ", graph 1 nohead dt 2 lc rgb \"#888888\"\n";
  }
  for (std::size_t i = 0; i < plot.series.size(); ++i) {
    const auto& ser = plot.series[i];
    if (ser.x.size() != ser.y.size())
      return Status::InvalidArgument("line plot " + png_path + ": x and y differ in length");
    s << "$d" << i << " << EOD\n";
    for (std::size_t j = 0; j < ser.x.size(); ++j)
      s << Num(ser.x[j]) << " " << Num(ser.y[j]) << "\n";
    s << "EOD\n";
  }
  s << "plot ";
  for (std::size_t i = 0; i < plot.series.size(); ++i) {
    s << (i ? ", " : "") << "$d" << i << " using 1:2 with "
      << (plot.points ? "linespoints" : "lines") << " lw 2 title " << Quote(plot.series[i].title);
  }
  s << "\n";
  return Run(s.str(), png_path);
}

Status PlotBars(const BarPlot& plot, const std::string& png_path) {
  if (plot.series.empty() || plot.categories.empty())
    return Status::InvalidArgument("bar plot " + png_path + ": no data");
  for (const auto& ser : plot.series) {
    if (ser.y.size() != plot.categories.size()) {
      return Status::InvalidArgument("bar plot " + png_path + ": series '" + ser.title + "' has " +
                                     std::to_string(ser.y.size()) + " values for " +
                                     std::to_string(plot.categories.size()) + " categories");
    }
  }
  std::ostringstream s;
  s << Header(png_path, plot.title, 680, 480) << "set ylabel " << Quote(plot.ylabel) << "\n"
    << YRange(plot.ymin, plot.ymax)
    << "set style data histogram\nset style histogram cluster gap 1\n"
    << "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset key below\nset xtics nomirror\n"
    << "$d << EOD\n";
  for (std::size_t c = 0; c < plot.categories.size(); ++c) {
    s << Quote(plot.categories[c]);
    for (const auto& ser : plot.series) s << " " << Num(ser.y[c]);
    s << "\n";
  }
  s << "EOD\nplot ";
  for (std::size_t i = 0; i < plot.series.size(); ++i) {
    s << (i ? ", " : "") << "$d using " << i + 2 << (i == 0 ? ":xtic(1)" : "") << " title "
      << Quote(plot.series[i].title);
  }
  s << "\n";
  return Run(s.str(), png_path);
}

Status PlotHeatmap(const Heatmap& plot, const std::string& png_path) {
  const std::size_t nr = plot.rows.size(), nc = plot.cols.size();
  if (nr == 0 || nc == 0 || plot.values.size() != nr)
    return Status::InvalidArgument("heatmap " + png_path + ": bad shape");
  std::ostringstream s;
  s << Header(png_path, plot.title, 700, 560) << "set xlabel " << Quote(plot.xlabel)
    << "\nset ylabel " << Quote(plot.ylabel) << "\nunset grid\nunset key\n"
    << "set cbrange [" << Num(plot.vmin) << ":" << Num(plot.vmax) << "]\n"
    << "set palette defined (0 \"#f7fbff\", 0.5 \"#6baed6\", 1 \"#08306b\")\n"
    << "set xrange [-0.5:" << nc - 0.5 << "]\nset yrange [" << nr - 0.5 << ":-0.5]\n"
    << "set xtics rotate by 30 right (";
  for (std::size_t c = 0; c < nc; ++c) s << (c ? ", " : "") << Quote(plot.cols[c]) << " " << c;
  s << ")\nset ytics (";
  for (std::size_t r = 0; r < nr; ++r) s << (r ? ", " : "") << Quote(plot.rows[r]) << " " << r;
  s << ")\n$d << EOD\n";
  int cells = 0;
  for (std::size_t r = 0; r < nr; ++r) {
    if (plot.values[r].size() != nc)
      return Status::InvalidArgument("heatmap " + png_path + ": bad row length");
    for (std::size_t c = 0; c < nc; ++c) {
      if (!std::isfinite(plot.values[r][c])) continue;
      s << c << " " << r << " " << Num(plot.values[r][c]) << "\n";
      ++cells;
    }
  }
  if (cells == 0) return Status::InvalidArgument("heatmap " + png_path + ": no finite cell");
  const double mid = (plot.vmin + plot.vmax) / 2;
  s << "EOD\nplot $d using 1:2:(0.5):(0.5):3 with boxxyerror fs solid 1.0 noborder fc palette, "
    << "$d using 1:2:(sprintf(\"%.2f\", $3)):($3 > " << Num(mid)
    << " ? 0xffffff : 0x000000) with labels tc rgb variable\n";
  return Run(s.str(), png_path);
}

Status PlotHistogram(const Histogram& plot, const std::string& png_path) {
  if (plot.series.empty() || plot.bins < 1 || !(plot.hi > plot.lo)) {
    return Status::InvalidArgument("histogram " + png_path + ": no series or a bad range");
  }
  std::ostringstream s;
  s << Header(png_path, plot.title, 680, 480) << "set xlabel " << Quote(plot.xlabel)
    << "\nset ylabel \"share of trials\"\nset key below\nset xrange [" << Num(plot.lo) << ":"
    << Num(plot.hi) << "]\n";
  const double w = (plot.hi - plot.lo) / plot.bins;
  for (std::size_t i = 0; i < plot.series.size(); ++i) {
    std::vector<double> count(plot.bins, 0);
    for (double v : plot.series[i].y) {
      int b = static_cast<int>(std::floor((v - plot.lo) / w));
      count[std::clamp(b, 0, plot.bins - 1)] += 1;
    }
    const double n = std::max<std::size_t>(1, plot.series[i].y.size());
    s << "$d" << i << " << EOD\n";
    for (int b = 0; b < plot.bins; ++b)
      s << Num(plot.lo + (b + 0.5) * w) << " " << Num(count[b] / n) << "\n";
    s << "EOD\n";
  }
  s << "plot ";
  for (std::size_t i = 0; i < plot.series.size(); ++i) {
    s << (i ? ", " : "") << "$d" << i << " using 1:2 with histeps lw 2 title "
      << Quote(plot.series[i].title);
  }
  s << "\n";
  return Run(s.str(), png_path);
}

}  // namespace mlink::eval
