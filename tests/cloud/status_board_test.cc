// The status page's statistics: events in, an exact snapshot out (a fake clock fixes the times).
#include "status_board.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace mlink::cloud {
namespace {

class StatusBoardTest : public ::testing::Test {
 protected:
  StatusBoard::Options Opts(std::size_t kept = 200) {
    StatusBoard::Options o;
    o.rounds_kept = kept;
    o.clock = [this] { return now_; };
    return o;
  }
  static LinkOptions Link(const std::string& id) {
    LinkOptions l;
    l.id = id;
    l.min_edges = 2;
    l.quorum = 1;
    l.round_deadline_s = 30;
    l.aggregation = "sample_weighted";
    return l;
  }
  double now_ = 1000;
};

TEST_F(StatusBoardTest, CountsPerSiteAndPerRoundWithAWeightedMetric) {
  StatusBoard b(Opts());
  b.AddLink(Link("l1"), {});
  b.RoundOpened("l1", 0);
  b.SiteConnected("site-a", "127.0.0.1:1111");
  now_ = 1001;
  b.SiteConnected("site-b", "127.0.0.1:2222");
  b.Rejected("site-b", "", "version_mismatch");  // a refused Hello: the site's count only
  now_ = 1002;
  b.UpdateReceived("site-a", "l1");
  b.UpdateAccepted("site-a", "l1", 10, 0.5);
  b.UpdateReceived("site-a", "l1");
  b.Rejected("site-a", "l1", "duplicate");
  b.UpdateReceived("site-b", "l1");
  b.UpdateAccepted("site-b", "l1", 30, 0.9);
  now_ = 1004.5;
  b.RoundClosed("l1", 0, 2.5);
  b.RoundOpened("l1", 1);
  b.UpdateReceived("site-b", "l1");
  b.Rejected("site-b", "l1", "round_not_open");
  b.UpdateReceived("site-a", "l1");
  b.UpdateAccepted("site-a", "l1", 10,
                   std::numeric_limits<double>::quiet_NaN());  // counted, not averaged
  now_ = 1006;
  b.SiteDisconnected("site-b");

  StatusSnapshot s = b.Snapshot();
  EXPECT_EQ(s.started_at, 1000);
  EXPECT_EQ(s.now, 1006);
  ASSERT_EQ(s.sites.size(), 2u);
  EXPECT_EQ(s.sites[0].identity, "site-a");
  EXPECT_EQ(s.sites[0].address, "127.0.0.1:1111");
  EXPECT_EQ(s.sites[0].connections, 1);
  EXPECT_EQ(s.sites[0].connected_since, 1000);
  EXPECT_EQ(s.sites[0].updates_sent, 3u);
  EXPECT_EQ(s.sites[0].accepted, 2u);
  EXPECT_EQ(s.sites[0].rejected, 1u);
  EXPECT_EQ(s.sites[1].identity, "site-b");
  EXPECT_EQ(s.sites[1].connections, 0);
  EXPECT_EQ(s.sites[1].last_seen, 1006);
  EXPECT_EQ(s.sites[1].updates_sent, 2u);
  EXPECT_EQ(s.sites[1].accepted, 1u);
  EXPECT_EQ(s.sites[1].rejected, 2u);

  ASSERT_EQ(s.links.size(), 1u);
  const auto& l = s.links[0];
  EXPECT_EQ(l.id, "l1");
  EXPECT_EQ(l.aggregation, "sample_weighted");
  EXPECT_EQ(l.round, 1u);
  EXPECT_EQ(l.rounds_completed, 1u);
  EXPECT_EQ(l.accepted, 3u);
  EXPECT_EQ(l.rejected, 2u);
  ASSERT_EQ(l.rounds.size(), 2u);
  const auto& r0 = l.rounds[0];
  EXPECT_EQ(r0.round, 0u);
  EXPECT_EQ(r0.opened_at, 1000);
  EXPECT_EQ(r0.closed_at, 1004.5);
  EXPECT_EQ(r0.duration_s, 2.5);
  EXPECT_EQ(r0.received, 3u);
  EXPECT_EQ(r0.accepted, 2u);
  EXPECT_EQ(r0.rejected, 1u);
  EXPECT_EQ(r0.reject_reasons, (std::map<std::string, uint64_t>{{"duplicate", 1}}));
  EXPECT_EQ(r0.samples, 40u);
  ASSERT_TRUE(r0.has_metric);
  EXPECT_DOUBLE_EQ(r0.metric, (0.5 * 10 + 0.9 * 30) / 40);  // 0.8
  const auto& r1 = l.rounds[1];
  EXPECT_EQ(r1.round, 1u);
  EXPECT_EQ(r1.closed_at, 0);
  EXPECT_EQ(r1.duration_s, 1006 - 1004.5);  // open: time so far
  EXPECT_EQ(r1.received, 2u);
  EXPECT_EQ(r1.accepted, 1u);
  EXPECT_EQ(r1.reject_reasons, (std::map<std::string, uint64_t>{{"round_not_open", 1}}));
  EXPECT_FALSE(r1.has_metric);
  EXPECT_EQ(s.rejected_by_reason,
            (std::map<std::string, uint64_t>{
                {"duplicate", 1}, {"round_not_open", 1}, {"version_mismatch", 1}}));
}

TEST_F(StatusBoardTest, MetricIsAPlainMeanWhenNoUpdateCarriesSamples) {
  StatusBoard b(Opts());
  b.AddLink(Link("l1"), {});
  b.RoundOpened("l1", 7);
  b.UpdateAccepted("site-a", "l1", 0, 0.25);
  b.UpdateAccepted("site-b", "l1", 0, 0.75);
  b.RoundClosed("l1", 7, 1);
  StatusSnapshot s = b.Snapshot();
  ASSERT_TRUE(s.links[0].rounds[0].has_metric);
  EXPECT_EQ(s.links[0].rounds[0].metric, 0.5);
}

TEST_F(StatusBoardTest, HistoryFromTheStoreAndRecoveredUpdatesAreBoundedPerLink) {
  StatusBoard b(Opts(3));
  std::vector<StatusSnapshot::Round> stored;
  for (uint64_t r = 0; r < 4; ++r) {
    StatusSnapshot::Round h;
    h.round = r;
    h.closed_at = 900 + r;
    h.accepted = h.received = 2;
    h.rejections_known = false;
    h.has_metric = true;
    h.metric = 0.1 * static_cast<double>(r);
    stored.push_back(h);
  }
  b.AddLink(Link("l1"), stored);
  b.AddLink(Link("l2"), {});
  b.RoundOpened("l1", 4);
  b.UpdateRecovered("l1", 5, 0.4);  // reloaded after a restart: the round's count, no site's
  b.UpdateRecovered("l2", 5, 0.4);  // l2 has no open round yet: ignored
  StatusSnapshot s = b.Snapshot();
  EXPECT_TRUE(s.sites.empty());
  ASSERT_EQ(s.links.size(), 2u);
  const auto& l = s.links[0];
  ASSERT_EQ(l.rounds.size(), 3u);  // rounds 2 and 3 from the store, 4 open
  EXPECT_EQ(l.rounds[0].round, 2u);
  EXPECT_FALSE(l.rounds[0].rejections_known);
  EXPECT_DOUBLE_EQ(l.rounds[1].metric, 0.3);
  EXPECT_EQ(l.rounds[2].round, 4u);
  EXPECT_EQ(l.rounds[2].accepted, 1u);
  EXPECT_EQ(l.rounds[2].samples, 5u);
  EXPECT_TRUE(s.links[1].rounds.empty());

  for (uint64_t r = 4; r < 10; ++r) {
    b.RoundClosed("l1", r, 1);
    b.RoundOpened("l1", r + 1);
  }
  s = b.Snapshot();
  ASSERT_EQ(s.links[0].rounds.size(), 3u);
  EXPECT_EQ(s.links[0].rounds[0].round, 8u);
  EXPECT_EQ(s.links[0].rounds[2].round, 10u);
  EXPECT_EQ(s.links[0].rounds_completed, 6u);
  EXPECT_EQ(s.links[0].round, 10u);
}

}  // namespace
}  // namespace mlink::cloud
