// The status page renderer on hand-made snapshots: escaping, the empty state, tables and the plot.
#include "status_page.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace mlink::cloud {
namespace {

StatusSnapshot::Round Closed(uint64_t round, double opened, double secs, uint64_t accepted,
                             double metric) {
  StatusSnapshot::Round r;
  r.round = round;
  r.opened_at = opened;
  r.closed_at = opened + secs;
  r.duration_s = secs;
  r.received = r.accepted = accepted;
  r.samples = 10 * accepted;
  r.has_metric = true;
  r.metric = metric;
  return r;
}

// Two sites (one with a hostile certificate name) and a link with three closed rounds and an
// open one that saw a rejection.
StatusSnapshot Sample() {
  StatusSnapshot s;
  s.started_at = 1795000000;
  s.now = 1795000110;
  StatusSnapshot::Site a;
  a.identity = "site-a";
  a.address = "127.0.0.1:40001";
  a.connections = 1;
  a.connected_since = 1795000012;
  a.last_seen = 1795000012;
  a.updates_sent = 4;
  a.accepted = 3;
  a.rejected = 1;
  StatusSnapshot::Site evil;
  evil.identity = "<script>alert(\"x\")</script>";
  evil.address = "10.0.0.9:5'<b>";
  evil.connections = 0;
  evil.last_seen = 1795000100;
  s.sites = {a, evil};
  StatusSnapshot::Link l;
  l.id = "hog->fullbody";
  l.aggregation = "mean";
  l.min_edges = 2;
  l.quorum = 1;
  l.deadline_s = 30;
  l.round = 3;
  l.rounds_completed = 3;
  l.accepted = 6;
  l.rejected = 1;
  l.rounds = {Closed(0, 1795000012, 4, 2, 0.5), Closed(1, 1795000016, 2.5, 2, 0.6),
              Closed(2, 1795000019, 3, 2, 0.75)};
  StatusSnapshot::Round open;
  open.round = 3;
  open.opened_at = 1795000100;
  open.duration_s = 10;
  open.received = 1;
  open.rejected = 1;
  open.reject_reasons = {{"duplicate", 1}};
  l.rounds.push_back(open);
  s.links = {l};
  s.rejected_by_reason = {{"duplicate", 1}};
  return s;
}

TEST(StatusPageTest, HtmlEscapeNeutralisesMarkupAndBadBytes) {
  EXPECT_EQ(HtmlEscape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  EXPECT_EQ(HtmlEscape("caf\xC3\xA9 \xE2\x86\x92 ok"),
            "caf\xC3\xA9 \xE2\x86\x92 ok");  // valid UTF-8 kept
  EXPECT_EQ(HtmlEscape("a\xFF"
                       "b\x01"
                       "c\xC0\xAF"),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD"
            "c\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(HtmlEscape("\xE2\x86"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // truncated sequence
  EXPECT_EQ(HtmlEscape(""), "");
}

TEST(StatusPageTest, EmptyStateIsAValidSelfContainedPage) {
  StatusSnapshot s;
  s.started_at = 1795000000;
  s.now = 1795000100;
  std::string html = RenderStatusHtml(s);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<meta http-equiv=\"refresh\" content=\"5\">"), std::string::npos);
  EXPECT_NE(html.find("As of 2026-11-18 11:08:20 UTC &middot; up 1m 40s"), std::string::npos)
      << html;
  EXPECT_NE(html.find("<span id=\"connected\">0</span> of 0 known sites connected"),
            std::string::npos);
  EXPECT_NE(html.find("No site has connected since the aggregator started."), std::string::npos);
  EXPECT_NE(html.find("Nothing rejected since the aggregator started."), std::string::npos);
  EXPECT_EQ(html.find("<svg"), std::string::npos);
  // Nothing is fetched from elsewhere and nothing runs.
  for (const char* banned : {"<script", "src=", "<link", "@import", "url("}) {
    EXPECT_EQ(html.find(banned), std::string::npos) << banned;
  }
  EXPECT_EQ(html.substr(html.size() - 15), "</body></html>\n");
  StatusPageOptions no_refresh;
  no_refresh.refresh_s = 0;
  EXPECT_EQ(RenderStatusHtml(s, no_refresh).find("http-equiv"), std::string::npos);

  auto j = nlohmann::json::parse(RenderStatusJson(s));
  EXPECT_EQ(j["sites"].size(), 0u);
  EXPECT_EQ(j["links"].size(), 0u);
  EXPECT_EQ(j["now"].get<double>(), 1795000100.0);
}

TEST(StatusPageTest, SitesRoundsAndReasonsAppearEscaped) {
  std::string html = RenderStatusHtml(Sample());
  EXPECT_NE(html.find("<span id=\"connected\">1</span> of 2 known sites connected"),
            std::string::npos);
  EXPECT_NE(
      html.find(
          "<tr><td class=\"l site\">site-a</td><td class=\"l\"><span "
          "class=\"ok\">connected</span></td>"
          "<td class=\"l\">127.0.0.1:40001</td><td class=\"l\">2026-11-18 11:06:52</td><td>4</td>"
          "<td>3</td><td class=\"bad\">1</td></tr>"),
      std::string::npos)
      << html;
  // The hostile identity and address arrive as text, never as markup.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_NE(
      html.find("<td class=\"l site\">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</td>"
                "<td class=\"l\"><span class=\"off\">gone since 2026-11-18 11:08:20</span></td>"
                "<td class=\"l\">10.0.0.9:5&#39;&lt;b&gt;</td>"),
      std::string::npos);
  EXPECT_NE(html.find("<h2>Link <code>hog-&gt;fullbody</code> &middot; open round <span "
                      "class=\"round\">3</span></h2>"),
            std::string::npos);
  EXPECT_NE(html.find("3 rounds closed since start, 6 updates accepted, 1 rejected"),
            std::string::npos);
  // Newest round first; the open one says so and counts its rejection by reason.
  EXPECT_NE(
      html.find(
          "<tr data-round=\"3\"><td>3</td><td class=\"l\">2026-11-18 11:08:20</td><td class=\"l\">"
          "<span class=\"ok\">open</span></td><td>10.0 s</td><td>1</td><td>0</td><td "
          "class=\"bad\">1</td>"
          "<td class=\"l\">duplicate&nbsp;1</td><td>0</td><td>&ndash;</td></tr>"),
      std::string::npos)
      << html;
  EXPECT_NE(
      html.find(
          "<tr data-round=\"1\"><td>1</td><td class=\"l\">2026-11-18 11:06:56</td><td class=\"l\">"
          "2026-11-18 11:06:58</td><td>2.50 s</td><td>2</td><td>2</td><td>0</td><td "
          "class=\"l\"></td>"
          "<td>20</td><td>0.6000</td></tr>"),
      std::string::npos);
  EXPECT_LT(html.find("data-round=\"3\""), html.find("data-round=\"0\""));
  EXPECT_NE(html.find("<p id=\"reasons\">duplicate&nbsp;1</p>"), std::string::npos);
  EXPECT_NE(html.find("Metric p: the link's validation performance"), std::string::npos);
}

TEST(StatusPageTest, PlotDrawsClosedRoundsOnTheUnitScale) {
  StatusSnapshot::Link l = Sample().links[0];
  std::string svg = RenderMetricPlot(l);
  // Plot area x 52..544, y 14..204; rounds 0, 1, 2 at metrics 0.5, 0.6, 0.75 on [0, 1]. The open
  // round 3 has no metric and is not drawn.
  EXPECT_NE(svg.find("<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2.5\" "
                     "points=\"52.0,109.0 298.0,90.0 544.0,61.5 \"/>"),
            std::string::npos)
      << svg;
  EXPECT_NE(svg.find("<title>round 2: 0.7500</title>"), std::string::npos);
  EXPECT_EQ(svg.find("round 3:"), std::string::npos);
  EXPECT_NE(svg.find(">0.00</text>"), std::string::npos);
  EXPECT_NE(svg.find(">1.00</text>"), std::string::npos);
  EXPECT_NE(svg.find("<title>Validation metric of link hog-&gt;fullbody over rounds</title>"),
            std::string::npos);

  // A metric outside [0, 1] (e.g. regression p = 1 - MAE/MAD < 0) gets a padded scale instead.
  l.rounds = {Closed(4, 1, 1, 1, -0.5), Closed(5, 2, 1, 1, 0.5)};
  svg = RenderMetricPlot(l);
  EXPECT_NE(svg.find("points=\"52.0,190.9 544.0,27.1 \""), std::string::npos) << svg;
  EXPECT_NE(svg.find(">-0.58</text>"), std::string::npos);

  l.rounds.clear();
  EXPECT_EQ(RenderMetricPlot(l),
            "<p class=\"empty\">No closed round with a reported metric yet.</p>");
}

TEST(StatusPageTest, JsonCarriesTheSameData) {
  StatusSnapshot s = Sample();
  s.sites[1].identity += "\xFF";  // not UTF-8: replaced, never a throw
  auto j = nlohmann::json::parse(RenderStatusJson(s));
  ASSERT_EQ(j["sites"].size(), 2u);
  EXPECT_EQ(j["sites"][0]["identity"], "site-a");
  EXPECT_EQ(j["sites"][0]["connected"], true);
  EXPECT_EQ(j["sites"][0]["updates_sent"], 4);
  EXPECT_EQ(j["sites"][0]["accepted"], 3);
  EXPECT_EQ(j["sites"][0]["rejected"], 1);
  EXPECT_EQ(j["sites"][1]["identity"], "<script>alert(\"x\")</script>\xEF\xBF\xBD");
  EXPECT_EQ(j["sites"][1]["connected"], false);
  ASSERT_EQ(j["links"].size(), 1u);
  const auto& l = j["links"][0];
  EXPECT_EQ(l["id"], "hog->fullbody");
  EXPECT_EQ(l["round"], 3);
  ASSERT_EQ(l["rounds"].size(), 4u);
  EXPECT_EQ(l["rounds"][2]["round"], 2);
  EXPECT_EQ(l["rounds"][2]["metric"], 0.75);
  EXPECT_EQ(l["rounds"][2]["duration_s"], 3.0);
  EXPECT_EQ(l["rounds"][2]["open"], false);
  EXPECT_EQ(l["rounds"][3]["open"], true);
  EXPECT_TRUE(l["rounds"][3]["metric"].is_null());
  EXPECT_TRUE(l["rounds"][3]["closed_at"].is_null());
  EXPECT_EQ(l["rounds"][3]["rejected"], 1);
  EXPECT_EQ(l["rounds"][3]["reject_reasons"]["duplicate"], 1);
  EXPECT_EQ(j["rejected_by_reason"]["duplicate"], 1);
}

}  // namespace
}  // namespace mlink::cloud
