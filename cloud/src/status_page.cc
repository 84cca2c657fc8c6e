#include "status_page.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

namespace mlink::cloud {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not one.
std::size_t Utf8Length(std::string_view s, std::size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = c < 0x80           ? 1
                  : (c >> 5) == 0x6  ? 2
                  : (c >> 4) == 0xE  ? 3
                  : (c >> 3) == 0x1E ? 4
                                     : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  }
  if (n == 2 && c < 0xC2) return 0;  // overlong
  if (n == 3) {
    auto c1 = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) return 0;  // overlong, surrogate
  }
  if (n == 4) {
    auto c1 = static_cast<unsigned char>(s[i + 1]);
    if ((c == 0xF0 && c1 < 0x90) || c > 0xF4 || (c == 0xF4 && c1 >= 0x90)) return 0;
  }
  return n;
}

std::string Num(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

std::string Time(double unix_s) {
  if (unix_s <= 0) return "&ndash;";
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string Span(double s) {
  if (s < 0) s = 0;
  if (s < 60) return Num(s, s < 10 ? 2 : 1) + " s";
  auto total = static_cast<uint64_t>(s);
  std::string out;
  if (total >= 86400) out += std::to_string(total / 86400) + "d ";
  if (total >= 3600) out += std::to_string(total / 3600 % 24) + "h ";
  out += std::to_string(total / 60 % 60) + "m " + std::to_string(total % 60) + "s";
  return out;
}

std::string Reasons(const std::map<std::string, uint64_t>& reasons) {
  std::string out;
  for (const auto& [reason, n] : reasons) {
    if (!out.empty()) out += ", ";
    out += HtmlEscape(reason) + "&nbsp;" + std::to_string(n);
  }
  return out;
}

const char* kStyle =
    "body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222;background:#fff}"
    "h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}"
    ".meta{color:#555;margin:0 0 8px}"
    "table{border-collapse:collapse;font-size:13px}"
    "th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}"
    "th{background:#f3f3f3}td.l,th.l{text-align:left}"
    ".ok{color:#1a7f37}.off{color:#888}.bad{color:#b42318}"
    ".row{display:flex;gap:20px;align-items:flex-start;flex-wrap:wrap}"
    "figure{margin:0}figcaption{color:#555;font-size:12px;max-width:560px}"
    ".empty{color:#777;font-style:italic}";

}  // namespace

std::string HtmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    std::size_t n = Utf8Length(text, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    char c = text[i];
    if (n == 1) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&quot;";
          break;
        case '\'':
          out += "&#39;";
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
            out += "\xEF\xBF\xBD";
          } else {
            out += c;
          }
      }
    } else {
      out.append(text.substr(i, n));
    }
    i += n;
  }
  return out;
}

std::string RenderMetricPlot(const StatusSnapshot::Link& link, int width, int height) {
  std::vector<const StatusSnapshot::Round*> pts;
  for (const auto& r : link.rounds) {
    if (r.closed_at > 0 && r.has_metric && std::isfinite(r.metric)) pts.push_back(&r);
  }
  if (pts.empty()) return "<p class=\"empty\">No closed round with a reported metric yet.</p>";
  const double left = 52, right = 16, top = 14, bottom = 36;
  const double pw = width - left - right, ph = height - top - bottom;
  double x0 = static_cast<double>(pts.front()->round), x1 = static_cast<double>(pts.back()->round);
  double lo = pts.front()->metric, hi = lo;
  for (const auto* p : pts) lo = std::min(lo, p->metric), hi = std::max(hi, p->metric);
  double y0, y1;
  if (lo >= 0 && hi <= 1) {  // accuracy-like metrics: the whole [0, 1] scale
    y0 = 0, y1 = 1;
  } else {
    double pad = hi > lo ? 0.08 * (hi - lo) : std::max(0.05, 0.05 * std::fabs(hi));
    y0 = lo - pad, y1 = hi + pad;
  }
  auto X = [&](double round) {
    return x1 > x0 ? left + pw * (round - x0) / (x1 - x0) : left + pw / 2;
  };
  auto Y = [&](double m) { return top + ph * (1 - (m - y0) / (y1 - y0)); };

  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" width=\"" << width
     << "\" height=\"" << height << "\" viewBox=\"0 0 " << width << ' ' << height
     << "\" role=\"img\">"
     << "<title>Validation metric of link " << HtmlEscape(link.id) << " over rounds</title>"
     << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
     << "\" fill=\"#fafafa\" stroke=\"#999\"/>";
  for (int i = 0; i <= 4; ++i) {  // horizontal grid and y labels
    double v = y0 + (y1 - y0) * i / 4.0;
    double y = Y(v);
    os << "<line x1=\"" << left << "\" x2=\"" << left + pw << "\" y1=\"" << Num(y, 1) << "\" y2=\""
       << Num(y, 1) << "\" stroke=\"#e3e3e3\"/>"
       << "<text x=\"" << left - 6 << "\" y=\"" << Num(y + 4, 1)
       << "\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">" << Num(v, 2) << "</text>";
  }
  // x ticks: integer rounds, at most 8 labels
  uint64_t a = pts.front()->round, b = pts.back()->round;
  uint64_t step = std::max<uint64_t>(1, (b - a + 7) / 8);
  for (uint64_t r = a; r <= b; r += step) {
    double x = X(static_cast<double>(r));
    os << "<line x1=\"" << Num(x, 1) << "\" x2=\"" << Num(x, 1) << "\" y1=\"" << top + ph
       << "\" y2=\"" << top + ph + 4 << "\" stroke=\"#999\"/><text x=\"" << Num(x, 1) << "\" y=\""
       << top + ph + 16 << "\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">" << r
       << "</text>";
  }
  os << "<text x=\"" << left + pw / 2 << "\" y=\"" << height - 4
     << "\" font-size=\"12\" text-anchor=\"middle\" fill=\"#222\">round</text>"
     << "<text x=\"12\" y=\"" << top + ph / 2
     << "\" font-size=\"12\" text-anchor=\"middle\" fill=\"#222\" "
     << "transform=\"rotate(-90 12 " << top + ph / 2 << ")\">metric p</text>";
  os << "<polyline fill=\"none\" stroke=\"" << kPlotColour << "\" stroke-width=\"2.5\" points=\"";
  for (const auto* p : pts)
    os << Num(X(static_cast<double>(p->round)), 1) << ',' << Num(Y(p->metric), 1) << ' ';
  os << "\"/>";
  for (const auto* p : pts) {
    os << "<circle cx=\"" << Num(X(static_cast<double>(p->round)), 1) << "\" cy=\""
       << Num(Y(p->metric), 1) << "\" r=\"3.5\" fill=\"" << kPlotColour << "\"><title>round "
       << p->round << ": " << Num(p->metric, 4) << "</title></circle>";
  }
  os << "</svg>";
  return os.str();
}

std::string RenderStatusHtml(const StatusSnapshot& s, const StatusPageOptions& options) {
  int connected = 0;
  for (const auto& site : s.sites) connected += site.connections > 0 ? 1 : 0;
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">";
  if (options.refresh_s > 0)
    os << "<meta http-equiv=\"refresh\" content=\"" << options.refresh_s << "\">";
  os << "<title>mlink aggregator status</title><style>" << kStyle << "</style></head><body>\n"
     << "<h1>mlink aggregator</h1>\n<p class=\"meta\">As of " << Time(s.now) << " UTC &middot; up "
     << Span(s.now - s.started_at) << " &middot; <span id=\"connected\">" << connected
     << "</span> of " << s.sites.size() << " known sites connected &middot; " << s.links.size()
     << (s.links.size() == 1 ? " link" : " links");
  if (options.refresh_s > 0) os << " &middot; refreshes every " << options.refresh_s << " s";
  os << " &middot; <a href=\"/status.json\">status.json</a> &middot; <a "
        "href=\"/metrics\">metrics</a></p>\n";

  os << "<h2>Sites</h2>\n";
  if (s.sites.empty()) {
    os << "<p class=\"empty\" id=\"no-sites\">No site has connected since the aggregator "
          "started.</p>\n";
  } else {
    os << "<table id=\"sites\"><tr><th class=\"l\">site (certificate CN)</th><th "
          "class=\"l\">state</th>"
          "<th class=\"l\">address</th><th class=\"l\">connected since (UTC)</th><th>updates "
          "sent</th>"
          "<th>accepted</th><th>rejected</th></tr>\n";
    for (const auto& site : s.sites) {
      os << "<tr><td class=\"l site\">" << HtmlEscape(site.identity) << "</td><td class=\"l\">";
      if (site.connections > 0) {
        os << "<span class=\"ok\">connected</span>";
        if (site.connections > 1) os << " (" << site.connections << ")";
      } else {
        os << "<span class=\"off\">gone since " << Time(site.last_seen) << "</span>";
      }
      os << "</td><td class=\"l\">" << HtmlEscape(site.address) << "</td><td class=\"l\">"
         << (site.connections > 0 ? Time(site.connected_since) : "&ndash;") << "</td><td>"
         << site.updates_sent << "</td><td>" << site.accepted << "</td><td"
         << (site.rejected ? " class=\"bad\"" : "") << ">" << site.rejected << "</td></tr>\n";
    }
    os << "</table>\n";
  }

  for (const auto& l : s.links) {
    os << "<h2>Link <code>" << HtmlEscape(l.id)
       << "</code> &middot; open round <span class=\"round\">" << l.round
       << "</span></h2>\n<p class=\"meta\">" << l.rounds_completed << " rounds closed since start, "
       << l.accepted << " updates accepted, " << l.rejected << " rejected &middot; aggregation "
       << HtmlEscape(l.aggregation) << " &middot; a round closes at " << l.min_edges
       << " updates, or after " << Num(l.deadline_s, 0) << " s with at least " << l.quorum
       << "</p>\n<div class=\"row\"><figure>" << RenderMetricPlot(l)
       << "<figcaption>Metric p: the link's validation performance that each site reports with its "
          "local update "
          "(the task's metric, e.g. accuracy or IoU, on the site's held-out validation share after "
          "local "
          "training from the round's global link), averaged over the round's accepted updates "
          "weighted by their "
          "samples. Closed rounds only.</figcaption></figure>\n";
    os << "<table class=\"rounds\"><tr><th>round</th><th class=\"l\">opened (UTC)</th><th "
          "class=\"l\">closed (UTC)</th>"
          "<th>duration</th><th>received</th><th>accepted</th><th>rejected</th><th "
          "class=\"l\">reasons</th>"
          "<th>samples</th><th>metric p</th></tr>\n";
    std::size_t shown = 0;
    for (auto it = l.rounds.rbegin(); it != l.rounds.rend() && shown < options.rounds_listed;
         ++it, ++shown) {
      const auto& r = *it;
      bool open = r.closed_at == 0;
      os << "<tr data-round=\"" << r.round << "\"><td>" << r.round << "</td><td class=\"l\">"
         << Time(r.opened_at) << "</td><td class=\"l\">"
         << (open ? "<span class=\"ok\">open</span>" : Time(r.closed_at)) << "</td><td>"
         << Span(r.duration_s) << "</td><td>" << r.received << "</td><td>" << r.accepted << "</td>";
      if (r.rejections_known) {
        os << "<td" << (r.rejected ? " class=\"bad\"" : "") << ">" << r.rejected
           << "</td><td class=\"l\">" << Reasons(r.reject_reasons) << "</td>";
      } else {
        os << "<td>&ndash;</td><td class=\"l off\">not stored</td>";
      }
      os << "<td>" << r.samples << "</td><td>" << (r.has_metric ? Num(r.metric, 4) : "&ndash;")
         << "</td></tr>\n";
    }
    os << "</table></div>\n";
    if (l.rounds.size() > shown) {
      os << "<p class=\"meta\">" << l.rounds.size() - shown
         << " older rounds in the plot and in status.json.</p>\n";
    }
  }

  os << "<h2>Rejections by reason</h2>\n";
  if (s.rejected_by_reason.empty()) {
    os << "<p class=\"empty\">Nothing rejected since the aggregator started.</p>\n";
  } else {
    os << "<p id=\"reasons\">" << Reasons(s.rejected_by_reason) << "</p>\n";
  }
  os << "</body></html>\n";
  return os.str();
}

std::string RenderStatusJson(const StatusSnapshot& s) {
  using nlohmann::json;
  json j;
  j["now"] = s.now;
  j["started_at"] = s.started_at;
  j["sites"] = json::array();
  for (const auto& site : s.sites) {
    j["sites"].push_back({{"identity", site.identity},
                          {"address", site.address},
                          {"connected", site.connections > 0},
                          {"connections", site.connections},
                          {"connected_since", site.connected_since},
                          {"last_seen", site.last_seen},
                          {"updates_sent", site.updates_sent},
                          {"accepted", site.accepted},
                          {"rejected", site.rejected}});
  }
  j["links"] = json::array();
  for (const auto& l : s.links) {
    json rounds = json::array();
    for (const auto& r : l.rounds) {
      json jr = {{"round", r.round},
                 {"open", r.closed_at == 0},
                 {"opened_at", r.opened_at > 0 ? json(r.opened_at) : json()},
                 {"closed_at", r.closed_at > 0 ? json(r.closed_at) : json()},
                 {"duration_s", r.duration_s},
                 {"received", r.received},
                 {"accepted", r.accepted},
                 {"samples", r.samples},
                 {"metric", r.has_metric && std::isfinite(r.metric) ? json(r.metric) : json()}};
      jr["rejected"] = r.rejections_known ? json(r.rejected) : json();
      jr["reject_reasons"] = r.reject_reasons;
      rounds.push_back(std::move(jr));
    }
    j["links"].push_back({{"id", l.id},
                          {"aggregation", l.aggregation},
                          {"min_edges", l.min_edges},
                          {"quorum", l.quorum},
                          {"deadline_s", l.deadline_s},
                          {"round", l.round},
                          {"rounds_completed", l.rounds_completed},
                          {"accepted", l.accepted},
                          {"rejected", l.rejected},
                          {"rounds", std::move(rounds)}});
  }
  j["rejected_by_reason"] = s.rejected_by_reason;
  j["metric"] =
      "sample-weighted mean of the validation performance p the sites report with their updates";
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace mlink::cloud
