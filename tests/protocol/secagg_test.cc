#include "mlink/protocol/secagg.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "mlink/protocol/codec.h"

namespace mlink::protocol::secagg {
namespace {

// Inputs that are not multiples of 2^-16, positive and negative, deterministic per client.
std::vector<float> InputOf(uint32_t client, uint32_t length) {
  std::vector<float> x(length);
  for (uint32_t i = 0; i < length; ++i) {
    x[i] = static_cast<float>(std::sin(0.37 * client + 0.011 * i) * 1.7 + 0.001 * client);
  }
  return x;
}

// The sum the server must learn: the exact sum of the fixed-point encodings.
std::vector<double> FixedPointSum(const std::vector<uint32_t>& clients, const Params& p) {
  std::vector<double> sum(p.length, 0.0);
  for (uint32_t c : clients) {
    const std::vector<float> x = InputOf(c, p.length);
    for (uint32_t i = 0; i < p.length; ++i) sum[i] += std::llround(x[i] * 65536.0) / 65536.0;
  }
  return sum;
}

Params MakeParams(uint32_t threshold, uint32_t degree, uint32_t length) {
  Params p;
  p.threshold = threshold;
  p.degree = degree;
  p.graph_seed = 0x5eed;
  p.frac_bits = 16;
  p.clip = 8.0;
  p.length = length;
  return p;
}

// Passes a message through its payload encoding, as the federation transport would.
template <typename T>
Result<T> ThroughWire(const T& m) {
  const Bytes bytes = Serialize(m);
  MLINK_ASSIGN_OR_RETURN(Message parsed, Parse(bytes.data(), bytes.size()));
  if (!std::holds_alternative<T>(parsed)) return Status::Internal("the payload changed kind");
  if (Serialize(parsed) != bytes) return Status::Internal("the payload does not round-trip");
  return std::get<T>(std::move(parsed));
}

// Drives one round in memory, every message through its payload encoding. Clients in
// `drop_before_mask` share keys but send no input; those in `silent_in_unmask` send an input but do
// not answer the unmask request.
struct Round {
  Context context{"hog->fullbody", 7};
  Params params;
  uint32_t n = 0;
  uint32_t min_clients = 0;
  std::set<uint32_t> drop_before_mask;
  std::set<uint32_t> silent_in_unmask;
  // Clients start without an index; the server's caller numbers their advertisements and each
  // client learns its index from its roster.
  bool indices_from_roster = false;

  std::vector<std::unique_ptr<Client>> clients;  // index i holds client i + 1
  std::unique_ptr<Server> server;
  std::vector<MaskedInput> seen_inputs;  // what the server received in phase 3

  Result<AggregateResult> Run() {
    MLINK_ASSIGN_OR_RETURN(server, Server::Create(context, params, min_clients));
    for (uint32_t c = 1; c <= n; ++c) {
      MLINK_ASSIGN_OR_RETURN(auto client, Client::Create(context, indices_from_roster ? 0 : c));
      AdvertiseKeys advertised = client->Advertise();
      if (indices_from_roster) {
        if (advertised.client != 0)
          return Status::Internal("an unnumbered client advertised an index");
        advertised.client = c;
      }
      MLINK_ASSIGN_OR_RETURN(advertised, ThroughWire(advertised));
      MLINK_RETURN_IF_ERROR(server->AddAdvertisement(advertised));
      clients.push_back(std::move(client));
    }
    MLINK_ASSIGN_OR_RETURN(auto rosters, server->CloseAdvertising());
    for (uint32_t c = 1; c <= n; ++c) {
      if (rosters.at(c).clients.size() != (params.degree == 0 ? n : params.degree + 1)) {
        return Status::Internal("roster of client " + std::to_string(c) + " has the wrong size");
      }
      MLINK_ASSIGN_OR_RETURN(Roster roster, ThroughWire(rosters.at(c)));
      MLINK_ASSIGN_OR_RETURN(ShareKeys sk, clients[c - 1]->Share(roster));
      MLINK_ASSIGN_OR_RETURN(sk, ThroughWire(sk));
      if (clients[c - 1]->Advertise().client != c)
        return Status::Internal("the client did not take its index");
      MLINK_RETURN_IF_ERROR(server->AddShareKeys(sk));
    }
    MLINK_ASSIGN_OR_RETURN(auto routed, server->CloseSharing());
    for (uint32_t c = 1; c <= n; ++c) {
      if (drop_before_mask.count(c)) continue;
      MLINK_ASSIGN_OR_RETURN(IncomingShares incoming, ThroughWire(routed.at(c)));
      MLINK_ASSIGN_OR_RETURN(MaskedInput y,
                             clients[c - 1]->Mask(incoming, InputOf(c, params.length)));
      MLINK_ASSIGN_OR_RETURN(y, ThroughWire(y));
      MLINK_RETURN_IF_ERROR(server->AddMaskedInput(y));
      seen_inputs.push_back(std::move(y));
    }
    MLINK_ASSIGN_OR_RETURN(UnmaskRequest request, server->CloseMasking());
    for (uint32_t c : request.survivors) {
      if (silent_in_unmask.count(c)) continue;
      MLINK_ASSIGN_OR_RETURN(UnmaskRequest delivered, ThroughWire(request));
      MLINK_ASSIGN_OR_RETURN(UnmaskResponse r, clients[c - 1]->Unmask(delivered));
      MLINK_ASSIGN_OR_RETURN(r, ThroughWire(r));
      MLINK_RETURN_IF_ERROR(server->AddUnmaskResponse(r));
    }
    return server->Finish();
  }
};

std::vector<uint32_t> Range(uint32_t n, const std::set<uint32_t>& minus = {}) {
  std::vector<uint32_t> out;
  for (uint32_t c = 1; c <= n; ++c) {
    if (!minus.count(c)) out.push_back(c);
  }
  return out;
}

void ExpectSumMatches(const AggregateResult& got, const std::vector<uint32_t>& contributors,
                      const Params& p) {
  EXPECT_EQ(got.survivors, contributors);
  const std::vector<double> want = FixedPointSum(contributors, p);
  ASSERT_EQ(got.sum.size(), want.size());
  std::vector<double> plain(p.length, 0.0);
  for (uint32_t c : contributors) {
    const std::vector<float> x = InputOf(c, p.length);
    for (uint32_t i = 0; i < p.length; ++i) plain[i] += x[i];
  }
  for (uint32_t i = 0; i < p.length; ++i) {
    ASSERT_EQ(got.sum[i], want[i]) << "element " << i;  // exact: the masks cancel mod 2^32
    // Fixed point rounds each input by at most 2^-17.
    ASSERT_NEAR(got.sum[i], plain[i], contributors.size() * std::ldexp(1.0, -17))
        << "element " << i;
  }
}

// ---------------------------------------------------------------------------------------------

TEST(SecAggFixedPointTest, EncodesTwosComplementAndRefusesOutOfRange) {
  Params p = MakeParams(1, 0, 4);
  auto enc = EncodeFixedPoint({1.5f, -1.5f, 0.0f, 8.0f}, p);
  ASSERT_TRUE(enc.ok()) << enc.status();
  EXPECT_EQ(*enc, (std::vector<uint32_t>{0x18000u, 0xfffe8000u, 0u, 0x80000u}));
  EXPECT_EQ(DecodeFixedPoint(*enc, p), (std::vector<double>{1.5, -1.5, 0.0, 8.0}));
  EXPECT_EQ(EncodeFixedPoint({8.001f}, p).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(EncodeFixedPoint({std::nanf("")}, p).status().code(), StatusCode::kInvalidArgument);
}

TEST(SecAggParamsTest, RejectsOddDegreeBadThresholdAndOverflow) {
  EXPECT_TRUE(ValidateParams(MakeParams(3, 6, 10), 100).ok());
  EXPECT_EQ(ValidateParams(MakeParams(3, 5, 10), 100).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateParams(MakeParams(7, 6, 10), 100).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateParams(MakeParams(0, 6, 10), 100).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateParams(MakeParams(4, 0, 10), 5).ok());  // complete graph: degree 4
  EXPECT_EQ(ValidateParams(MakeParams(5, 0, 10), 5).code(), StatusCode::kInvalidArgument);
  // 4096 clients x 8 x 2^16 = 2^31 does not fit a signed 32-bit sum.
  EXPECT_EQ(ValidateParams(MakeParams(3, 6, 10), 4096).code(), StatusCode::kOutOfRange);
  EXPECT_TRUE(ValidateParams(MakeParams(3, 6, 10), 4095).ok());
}

TEST(SecAggShamirTest, AnyThresholdSubsetRebuildsTheSecret) {
  Bytes secret(kKeyBytes);
  for (std::size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<uint8_t>(0xff - 7 * i);
  auto shares = ShamirSplit(secret, 3, {2, 5, 9, 11, 40});
  ASSERT_TRUE(shares.ok()) << shares.status();
  ASSERT_EQ(shares->size(), 5u);
  int subsets = 0;
  for (int a = 0; a < 5; ++a) {
    for (int b = a + 1; b < 5; ++b) {
      for (int c = b + 1; c < 5; ++c) {
        auto got = ShamirCombine({(*shares)[a], (*shares)[b], (*shares)[c]}, 3);
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(*got, secret);
        ++subsets;
      }
    }
  }
  EXPECT_EQ(subsets, 10);
  auto all = ShamirCombine(*shares, 3);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, secret);

  auto two = ShamirCombine({(*shares)[0], (*shares)[1]}, 3);
  EXPECT_EQ(two.status().code(), StatusCode::kFailedPrecondition);

  std::vector<Bytes> tampered = *shares;
  tampered[4][10] ^= 0x01;  // a limb of the last share
  EXPECT_EQ(ShamirCombine(tampered, 3).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(ShamirCombine({(*shares)[0], (*shares)[0], (*shares)[1]}, 3).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ShamirSplit(secret, 3, {1, 1, 2}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ShamirSplit(secret, 3, {0, 1, 2}).status().code(), StatusCode::kInvalidArgument);
}

TEST(SecAggGraphTest, HararyGraphIsRegularSymmetricConnectedAndSeeded) {
  std::vector<uint32_t> ids;
  for (uint32_t c = 1; c <= 100; ++c) ids.push_back(c * 3);  // ids need not be dense
  const auto g = NeighbourGraph(ids, 14, 42);
  ASSERT_EQ(g.size(), 100u);
  for (const auto& [id, nb] : g) {
    EXPECT_EQ(nb.size(), 14u) << id;
    EXPECT_EQ(std::set<uint32_t>(nb.begin(), nb.end()).size(), 14u) << id;
    for (uint32_t j : nb) {
      EXPECT_NE(j, id);
      const auto& back = g.at(j);
      EXPECT_TRUE(std::binary_search(back.begin(), back.end(), id)) << id << " -> " << j;
    }
  }
  std::set<uint32_t> reached{ids[0]};
  std::deque<uint32_t> queue{ids[0]};
  while (!queue.empty()) {
    const uint32_t v = queue.front();
    queue.pop_front();
    for (uint32_t j : g.at(v)) {
      if (reached.insert(j).second) queue.push_back(j);
    }
  }
  EXPECT_EQ(reached.size(), 100u);
  EXPECT_EQ(NeighbourGraph(ids, 14, 42), g);
  EXPECT_NE(NeighbourGraph(ids, 14, 43), g);

  const auto complete = NeighbourGraph({1, 2, 3, 4}, 0, 42);
  EXPECT_EQ(complete.at(3), (std::vector<uint32_t>{1, 2, 4}));
  EXPECT_EQ(NeighbourGraph({1, 2, 3, 4}, 6, 42), complete);  // degree >= n - 1: complete
}

TEST(SecAggRoundTest, CompleteGraphSumEqualsPlainSumAndServerSeesNoInput) {
  Round r;
  r.params = MakeParams(3, 0, 257);
  r.n = 5;
  r.min_clients = 4;
  auto result = r.Run();
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectSumMatches(*result, Range(5), r.params);
  EXPECT_TRUE(result->dropped.empty());
  // No masked input the server received, nor the running sum it holds, shares a word with
  // an individual input's encoding (a random word matches with probability 2^-32).
  ASSERT_EQ(r.seen_inputs.size(), 5u);
  for (const MaskedInput& y : r.seen_inputs) {
    auto x = EncodeFixedPoint(InputOf(y.client, 257), r.params);
    ASSERT_TRUE(x.ok());
    int equal = 0;
    for (uint32_t i = 0; i < 257; ++i) {
      equal += y.masked[i] == (*x)[i];
      equal += r.server->masked_sum()[i] == (*x)[i];
    }
    EXPECT_EQ(equal, 0) << "client " << y.client;
  }
}

TEST(SecAggRoundTest, SparseGraphRecoversClientsDroppedAfterSharingAndSilentSurvivors) {
  Round r;
  r.params = MakeParams(5, 10, 1000);  // 10 neighbours, 5 of them lost at worst
  r.n = 30;
  r.min_clients = 20;
  r.drop_before_mask = {3, 4, 17};  // shared keys, sent no input: their pairwise masks are rebuilt
  r.silent_in_unmask = {9, 25};     // sent inputs, then vanished: their b is rebuilt from others
  auto result = r.Run();
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectSumMatches(*result, Range(30, {3, 4, 17}), r.params);
  EXPECT_EQ(result->dropped, (std::vector<uint32_t>{3, 4, 17}));
}

TEST(SecAggRoundTest, ClientsLearnServerAssignedIndicesFromTheirRosters) {
  Round r;
  r.params = MakeParams(3, 4, 100);
  r.n = 9;
  r.min_clients = 7;
  r.indices_from_roster = true;
  r.drop_before_mask = {5};
  auto result = r.Run();
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectSumMatches(*result, Range(9, {5}), r.params);
}

TEST(SecAggRoundTest, SurvivesDropsDownToTheThresholdAndFailsClearlyBelow) {
  // Complete graph of 6, threshold 3: an answering survivor's self mask needs 3 shares from the
  // other answering clients, so 4 of 6 must answer.
  {
    Round r;
    r.params = MakeParams(3, 0, 64);
    r.n = 6;
    r.min_clients = 4;
    r.silent_in_unmask = {1, 2};
    auto result = r.Run();
    ASSERT_TRUE(result.ok()) << result.status();
    ExpectSumMatches(*result, Range(6), r.params);
  }
  {
    Round r;
    r.params = MakeParams(3, 0, 64);
    r.n = 6;
    r.min_clients = 4;
    r.silent_in_unmask = {1, 2, 3};  // 3 answer: client 4's self mask has 2 shares
    auto result = r.Run();
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(result.status().message().find("cannot unmask link 'hog->fullbody' round 7"),
              std::string::npos)
        << result.status();
    EXPECT_NE(result.status().message().find("3 needed"), std::string::npos) << result.status();
  }
  {
    // Too few inputs at all: the round closes nothing and says how many came.
    Round r;
    r.params = MakeParams(3, 0, 64);
    r.n = 6;
    r.min_clients = 5;
    r.drop_before_mask = {2, 5};
    auto result = r.Run();
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(result.status().message().find("4 masked inputs arrived, 5 needed"),
              std::string::npos)
        << result.status();
  }
}

TEST(SecAggPayloadTest, GoldenBytesPinTheLayout) {
  UnmaskRequest m;
  m.context = {"ab", 0x0102};
  m.survivors = {1, 3};
  // clang-format off
  const Bytes want = {0x06,                                 // kind: UnmaskRequest
                      0x02, 0, 0, 0, 0, 0, 0, 0, 'a', 'b',  // link id
                      0x02, 0x01, 0, 0, 0, 0, 0, 0,         // round
                      0x02, 0, 0, 0, 0, 0, 0, 0,            // two survivors
                      0x01, 0, 0, 0, 0x03, 0, 0, 0};
  // clang-format on
  EXPECT_EQ(Serialize(m), want);
  // On the federation wire the payload travels in a SecAgg frame.
  const std::vector<uint8_t> frame = protocol::Encode(protocol::SecAgg{"ab", want});
  EXPECT_EQ(WireBytes(m), frame.size());
  auto decoded = protocol::Decode(frame.data(), frame.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const auto& env = std::get<protocol::SecAgg>(*decoded);
  EXPECT_EQ(env.link_id, "ab");
  EXPECT_EQ(env.payload, want);
  for (std::size_t cut = protocol::kHeaderBytes; cut < frame.size(); ++cut) {
    std::vector<uint8_t> part(frame.begin(), frame.begin() + cut);
    part[8] = static_cast<uint8_t>(cut - protocol::kHeaderBytes);  // a consistent header
    EXPECT_FALSE(protocol::Decode(part.data(), part.size()).ok()) << cut;
  }
}

TEST(SecAggPayloadTest, EveryTruncationTrailingByteAndBadFieldIsRefused) {
  Round r;
  r.params = MakeParams(2, 0, 3);
  r.n = 3;
  r.min_clients = 3;
  ASSERT_TRUE(r.Run().ok());
  // Messages of every kind with every field filled.
  auto client = Client::Create(r.context, 1);
  ASSERT_TRUE(client.ok());
  AdvertiseKeys adv = (*client)->Advertise();
  adv.certificate_pem = "-----BEGIN CERTIFICATE-----";
  adv.signature = {1, 2, 3};
  Roster roster;
  roster.context = r.context;
  roster.params = MakeParams(2, 4, 10);
  roster.params.clip = 0.1;
  roster.total_clients = 9;
  roster.recipient = 1;
  roster.clients = {adv, adv};
  ShareKeys shares{r.context, 2, {{2, 1, Bytes(124, 7)}, {2, 3, Bytes(124, 8)}}};
  MaskedInput masked{r.context, 2, {5, 6, 0xffffffffu}};
  UnmaskResponse response{r.context, 2, {{1, false, Bytes(44, 1)}, {3, true, Bytes(44, 2)}}};
  for (const Message& m :
       std::vector<Message>{adv, roster, shares, IncomingShares{r.context, 1, shares.shares},
                            masked, UnmaskRequest{r.context, {1, 2}}, response}) {
    const Bytes bytes = Serialize(m);
    auto back = Parse(bytes.data(), bytes.size());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->index(), m.index());
    EXPECT_EQ(Serialize(*back), bytes);
    for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
      auto part = Parse(bytes.data(), cut);
      ASSERT_FALSE(part.ok()) << "kind " << m.index() << " cut at " << cut;
      EXPECT_EQ(part.status().code(), StatusCode::kInvalidArgument) << part.status();
    }
    Bytes longer = bytes;
    longer.push_back(0);
    EXPECT_EQ(Parse(longer.data(), longer.size()).status().code(), StatusCode::kInvalidArgument);
  }
  const Bytes roster_bytes = Serialize(roster);
  auto parsed_roster = Parse(roster_bytes.data(), roster_bytes.size());
  ASSERT_TRUE(parsed_roster.ok());
  const Roster& rr = std::get<Roster>(*parsed_roster);
  EXPECT_EQ(rr.params.clip, 0.1);
  EXPECT_EQ(rr.params.degree, 4u);
  EXPECT_EQ(rr.recipient, 1u);
  EXPECT_EQ(rr.clients[1].signature, (Bytes{1, 2, 3}));
  EXPECT_EQ(rr.clients[1].context, r.context);

  PayloadLimits small;
  small.max_words = 2;
  const Bytes m3 = Serialize(masked);
  EXPECT_EQ(Parse(m3.data(), m3.size(), small).status().code(), StatusCode::kOutOfRange);
  Bytes bad_kind = m3;
  bad_kind[0] = 9;
  EXPECT_EQ(Parse(bad_kind.data(), bad_kind.size()).status().code(), StatusCode::kInvalidArgument);
  Bytes huge_count = Serialize(UnmaskRequest{r.context, {1}});
  huge_count[huge_count.size() - 5] = 0x40;  // the u64 count's top byte: 2^62 survivors
  EXPECT_EQ(Parse(huge_count.data(), huge_count.size()).status().code(), StatusCode::kOutOfRange);
  Bytes bad_flag = Serialize(response);
  // The first share's flag: before it, its blob, then the second share's owner, flag and blob.
  const std::size_t flag_at = bad_flag.size() - (8 + 44) - 1 - 4 - (8 + 44) - 1;
  ASSERT_EQ(bad_flag[flag_at], 0);
  bad_flag[flag_at] = 2;
  EXPECT_EQ(Parse(bad_flag.data(), bad_flag.size()).status().code(), StatusCode::kInvalidArgument);
}

// A round advanced to the point where every client holds its incoming shares.
struct SharedRound {
  Context context{"link", 3};
  Params params = MakeParams(2, 0, 8);
  std::unique_ptr<Server> server;
  std::vector<std::unique_ptr<Client>> clients;
  std::map<uint32_t, Roster> rosters;
  std::map<uint32_t, IncomingShares> routed;

  void Build(uint32_t n) {
    auto s = Server::Create(context, params, 3);
    ASSERT_TRUE(s.ok()) << s.status();
    server = std::move(*s);
    for (uint32_t c = 1; c <= n; ++c) {
      auto client = Client::Create(context, c);
      ASSERT_TRUE(client.ok()) << client.status();
      ASSERT_TRUE(server->AddAdvertisement((*client)->Advertise()).ok());
      clients.push_back(std::move(*client));
    }
    auto r = server->CloseAdvertising();
    ASSERT_TRUE(r.ok()) << r.status();
    rosters = *r;
    for (auto& c : clients) {
      auto sk = c->Share(rosters.at(c->Advertise().client));
      ASSERT_TRUE(sk.ok()) << sk.status();
      ASSERT_TRUE(server->AddShareKeys(*sk).ok());
    }
    auto routed_or = server->CloseSharing();
    ASSERT_TRUE(routed_or.ok()) << routed_or.status();
    routed = *routed_or;
  }
};

TEST(SecAggRejectTest, TamperedOrMisroutedShareIsRejectedNamingTheSender) {
  SharedRound r;
  r.Build(4);
  IncomingShares tampered = r.routed.at(1);
  ASSERT_EQ(tampered.shares.size(), 3u);
  tampered.shares[1].ciphertext[20] ^= 0x40;
  const uint32_t sender = tampered.shares[1].from;
  auto y = r.clients[0]->Mask(tampered, InputOf(1, 8));
  ASSERT_FALSE(y.ok());
  EXPECT_EQ(y.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(y.status().message().find("share from client " + std::to_string(sender) +
                                      " does not authenticate"),
            std::string::npos)
      << y.status();

  // Client 2's share for client 3, relabelled as addressed to client 1: the AAD names 3.
  IncomingShares misrouted = r.routed.at(1);
  for (EncryptedShare& e : misrouted.shares) {
    if (e.from != 2) continue;
    for (const EncryptedShare& other : r.routed.at(3).shares) {
      if (other.from == 2) e.ciphertext = other.ciphertext;
    }
  }
  auto y2 = r.clients[0]->Mask(misrouted, InputOf(1, 8));
  EXPECT_EQ(y2.status().code(), StatusCode::kPermissionDenied) << y2.status();
  // The untouched shares still work.
  auto y3 = r.clients[0]->Mask(r.routed.at(1), InputOf(1, 8));
  EXPECT_TRUE(y3.ok()) << y3.status();
}

TEST(SecAggRejectTest, MaterialFromAnotherRoundIsRejected) {
  SharedRound old_round;
  old_round.context.round = 3;
  old_round.Build(3);
  SharedRound now;
  now.context.round = 4;
  now.Build(3);
  // A share sealed in round 3 replayed into round 4, with the outer fields rewritten.
  IncomingShares replay = now.routed.at(1);
  for (std::size_t i = 0; i < replay.shares.size(); ++i) {
    replay.shares[i].ciphertext = old_round.routed.at(1).shares[i].ciphertext;
  }
  auto y = now.clients[0]->Mask(replay, InputOf(1, 8));
  EXPECT_EQ(y.status().code(), StatusCode::kPermissionDenied) << y.status();
  // Old-round messages at the server, and an old roster at a client, are refused outright.
  auto old_input = old_round.clients[1]->Mask(old_round.routed.at(2), InputOf(2, 8));
  ASSERT_TRUE(old_input.ok()) << old_input.status();
  EXPECT_EQ(now.server->AddMaskedInput(*old_input).code(), StatusCode::kPermissionDenied);
  auto fresh = Client::Create(now.context, 9);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((*fresh)->Share(old_round.rosters.at(1)).status().code(),
            StatusCode::kPermissionDenied);
}

TEST(SecAggRejectTest, WrongOrReplayedKeysAreRefusedAtAdvertising) {
  Context ctx{"link", 1};
  auto server = Server::Create(ctx, MakeParams(2, 0, 8), 3);
  ASSERT_TRUE(server.ok()) << server.status();
  auto a = Client::Create(ctx, 1);
  auto b = Client::Create(ctx, 2);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*server)->AddAdvertisement((*a)->Advertise()).ok());
  EXPECT_EQ((*server)->AddAdvertisement((*a)->Advertise()).code(), StatusCode::kAlreadyExists);

  AdvertiseKeys zero = (*b)->Advertise();
  zero.c_public.assign(kKeyBytes, 0);  // a low-order point: the agreement would be all zero
  EXPECT_EQ((*server)->AddAdvertisement(zero).code(), StatusCode::kInvalidArgument);
  AdvertiseKeys short_key = (*b)->Advertise();
  short_key.s_public.pop_back();
  EXPECT_EQ((*server)->AddAdvertisement(short_key).code(), StatusCode::kInvalidArgument);
  AdvertiseKeys stolen = (*b)->Advertise();
  stolen.s_public = (*a)->Advertise().s_public;  // another client's key, replayed
  EXPECT_EQ((*server)->AddAdvertisement(stolen).code(), StatusCode::kInvalidArgument);
  AdvertiseKeys other_round = (*b)->Advertise();
  other_round.context.round = 0;
  EXPECT_EQ((*server)->AddAdvertisement(other_round).code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE((*server)->AddAdvertisement((*b)->Advertise()).ok());

  // A roster that carries other keys for the client itself is refused by the client.
  auto c = Client::Create(ctx, 3);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*server)->AddAdvertisement((*c)->Advertise()).ok());
  auto roster = (*server)->CloseAdvertising();
  ASSERT_TRUE(roster.ok()) << roster.status();
  const Roster& mine = roster->at(3);
  ASSERT_EQ(mine.clients.size(), 3u);
  Roster forged = mine;
  forged.clients[2].c_public = forged.clients[0].s_public;
  EXPECT_EQ((*c)->Share(forged).status().code(), StatusCode::kInvalidArgument);  // repeats a key
  forged = mine;
  std::swap(forged.clients[2].c_public, forged.clients[2].s_public);
  EXPECT_EQ((*c)->Share(forged).status().code(), StatusCode::kPermissionDenied);
  forged = mine;
  forged.clients.pop_back();  // a neighbour withheld
  forged.clients.pop_back();
  EXPECT_EQ((*c)->Share(forged).status().code(), StatusCode::kFailedPrecondition);  // not in it
  forged = mine;
  forged.clients.erase(forged.clients.begin());
  EXPECT_EQ((*c)->Share(forged).status().code(),
            StatusCode::kInvalidArgument);  // too few neighbours
  EXPECT_TRUE((*c)->Share(mine).ok());
}

TEST(SecAggRejectTest, ServerAndClientRefuseOutOfProtocolMessages) {
  SharedRound r;
  r.Build(4);
  std::vector<MaskedInput> inputs;
  for (uint32_t c = 1; c <= 4; ++c) {
    auto y = r.clients[c - 1]->Mask(r.routed.at(c), InputOf(c, 8));
    ASSERT_TRUE(y.ok()) << y.status();
    inputs.push_back(*y);
  }
  ASSERT_TRUE(r.server->AddMaskedInput(inputs[0]).ok());
  EXPECT_EQ(r.server->AddMaskedInput(inputs[0]).code(), StatusCode::kAlreadyExists);
  MaskedInput stranger = inputs[1];
  stranger.client = 9;
  EXPECT_EQ(r.server->AddMaskedInput(stranger).code(), StatusCode::kPermissionDenied);
  MaskedInput short_input = inputs[1];
  short_input.masked.pop_back();
  EXPECT_EQ(r.server->AddMaskedInput(short_input).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(r.server->AddMaskedInput(inputs[1]).ok());
  ASSERT_TRUE(r.server->AddMaskedInput(inputs[2]).ok());
  auto request = r.server->CloseMasking();  // client 4 dropped after masking
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->survivors, (std::vector<uint32_t>{1, 2, 3}));

  // A survivor list below the threshold among a client's neighbours: it reveals nothing.
  UnmaskRequest tiny = *request;
  tiny.survivors = {1};
  EXPECT_EQ(r.clients[0]->Unmask(tiny).status().code(), StatusCode::kFailedPrecondition);

  auto answer = r.clients[0]->Unmask(*request);
  ASSERT_TRUE(answer.ok()) << answer.status();
  // Client 1 reveals b shares of 2 and 3 and the s share of dropped client 4, never both.
  ASSERT_EQ(answer->shares.size(), 3u);
  EXPECT_FALSE(answer->shares[0].is_mask_key);
  EXPECT_FALSE(answer->shares[1].is_mask_key);
  EXPECT_TRUE(answer->shares[2].is_mask_key);
  EXPECT_EQ(r.clients[0]->Unmask(*request).status().code(),
            StatusCode::kFailedPrecondition);  // once only

  UnmaskResponse wrong_kind = *answer;
  wrong_kind.shares[0].is_mask_key = true;  // an s share of a survivor would unmask it
  EXPECT_EQ(r.server->AddUnmaskResponse(wrong_kind).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(r.server->AddUnmaskResponse(*answer).ok());
  EXPECT_EQ(r.server->AddUnmaskResponse(*answer).code(), StatusCode::kAlreadyExists);
  for (uint32_t c = 2; c <= 3; ++c) {
    auto resp = r.clients[c - 1]->Unmask(*request);
    ASSERT_TRUE(resp.ok()) << resp.status();
    ASSERT_TRUE(r.server->AddUnmaskResponse(*resp).ok());
  }
  auto result = r.server->Finish();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->dropped, (std::vector<uint32_t>{4}));
  ExpectSumMatches(*result, {1, 2, 3}, r.params);
}

// Deployment certificates from scripts/gen-certs: a CA with edges site-a..site-c, and a second,
// unrelated CA with an edge of its own.
class SecAggSignedTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string((std::filesystem::temp_directory_path() /
                            ("mlink-secagg-certs-" + std::to_string(::getpid())))
                               .string());
    std::filesystem::remove_all(*dir_);
    const std::string gen = std::string(MLINK_SOURCE_DIR) + "/scripts/gen-certs ";
    ASSERT_EQ(std::system((gen + *dir_ + "/ca site-a site-b site-c > /dev/null").c_str()), 0);
    ASSERT_EQ(std::system((gen + *dir_ + "/rogue site-x > /dev/null").c_str()), 0);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string Read(const std::string& name) {
    std::ifstream in(*dir_ + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static ClientOptions Signed(const Context& ctx, uint32_t client, const std::string& who,
                              const std::string& ca_dir = "ca") {
    ClientOptions o;
    o.context = ctx;
    o.client = client;
    o.key_pem = Read(ca_dir + "/" + who + ".key");
    o.certificate_pem = Read(ca_dir + "/" + who + ".pem");
    o.ca_pem = Read("ca/ca.pem");
    return o;
  }
  // Creates clients 1..3 as site-a..site-c (each signing and checking), advertises them and
  // returns client 1's roster.
  void Advertise(Context ctx) {
    auto server = Server::Create(ctx, MakeParams(2, 0, 8), 3);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    const char* names[] = {"site-a", "site-b", "site-c"};
    for (uint32_t c = 1; c <= 3; ++c) {
      auto client = Client::Create(Signed(ctx, c, names[c - 1]));
      ASSERT_TRUE(client.ok()) << client.status();
      ASSERT_FALSE((*client)->Advertise().signature.empty());
      ASSERT_TRUE(server_->AddAdvertisement((*client)->Advertise()).ok());
      clients_.push_back(std::move(*client));
    }
    auto rosters = server_->CloseAdvertising();
    ASSERT_TRUE(rosters.ok()) << rosters.status();
    rosters_ = *rosters;
  }

  static std::string* dir_;
  std::unique_ptr<Server> server_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::map<uint32_t, Roster> rosters_;
};
std::string* SecAggSignedTest::dir_ = nullptr;

TEST_F(SecAggSignedTest, SignedRoundCompletesWithTheExactSum) {
  const Context ctx{"hog->fullbody", 11};
  Advertise(ctx);
  for (auto& c : clients_) {
    auto sk = c->Share(rosters_.at(c->Advertise().client));
    ASSERT_TRUE(sk.ok()) << sk.status();
    ASSERT_TRUE(server_->AddShareKeys(*sk).ok());
  }
  auto routed = server_->CloseSharing();
  ASSERT_TRUE(routed.ok()) << routed.status();
  for (uint32_t c = 1; c <= 3; ++c) {
    auto y = clients_[c - 1]->Mask(routed->at(c), InputOf(c, 8));
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_TRUE(server_->AddMaskedInput(*y).ok());
  }
  auto request = server_->CloseMasking();
  ASSERT_TRUE(request.ok()) << request.status();
  for (uint32_t c = 1; c <= 3; ++c) {
    auto r = clients_[c - 1]->Unmask(*request);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(server_->AddUnmaskResponse(*r).ok());
  }
  auto result = server_->Finish();
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectSumMatches(*result, {1, 2, 3}, MakeParams(2, 0, 8));
}

TEST_F(SecAggSignedTest, SubstitutedKeysAndForeignIdentitiesAreRefused) {
  const Context ctx{"hog->fullbody", 12};
  Advertise(ctx);
  const Roster& mine = rosters_.at(1);
  ASSERT_EQ(mine.clients.size(), 3u);
  auto expect_refused = [&](const Roster& forged, const std::string& why) {
    auto fresh = Client::Create(Signed(ctx, 1, "site-a"));
    ASSERT_TRUE(fresh.ok());
    Roster r = forged;
    r.clients[0] = (*fresh)->Advertise();  // the fresh client's own entry
    auto sk = (*fresh)->Share(r);
    ASSERT_FALSE(sk.ok()) << why;
    EXPECT_EQ(sk.status().code(), StatusCode::kPermissionDenied) << why << ": " << sk.status();
    EXPECT_NE(sk.status().message().find(why), std::string::npos) << sk.status();
  };
  // A server that puts its own keys in client 2's place, keeping 2's certificate and signature.
  auto mitm = Client::Create(ctx, 2);
  ASSERT_TRUE(mitm.ok());
  Roster forged = mine;
  forged.clients[1].c_public = (*mitm)->Advertise().c_public;
  forged.clients[1].s_public = (*mitm)->Advertise().s_public;
  expect_refused(forged, "roster entry of client 2: the signature over its keys does not verify");
  // ... or without any certificate.
  forged.clients[1] = (*mitm)->Advertise();
  expect_refused(forged, "roster entry of client 2 carries no certificate");
  // ... or signed with the aggregator's own (server-purpose) certificate, from the same CA.
  auto as_cloud = Client::Create(Signed(ctx, 2, "cloud"));
  ASSERT_TRUE(as_cloud.ok()) << as_cloud.status();
  forged.clients[1] = (*as_cloud)->Advertise();
  expect_refused(forged, "roster entry of client 2: its certificate is not a client certificate");
  // ... or by an edge of another CA.
  auto rogue = Client::Create(Signed(ctx, 2, "site-x", "rogue"));
  ASSERT_TRUE(rogue.ok()) << rogue.status();
  forged.clients[1] = (*rogue)->Advertise();
  expect_refused(forged, "roster entry of client 2: its certificate is not a client certificate");
  // ... or one identity in two slots (a second key set signed by site-c).
  auto twin = Client::Create(Signed(ctx, 2, "site-c"));
  ASSERT_TRUE(twin.ok());
  forged = mine;
  forged.clients[1] = (*twin)->Advertise();
  expect_refused(forged, "identity 'site-c' appears twice");
  // A signature from another round does not verify in this one.
  auto old = Client::Create(Signed(Context{"hog->fullbody", 11}, 2, "site-b"));
  ASSERT_TRUE(old.ok());
  forged = mine;
  forged.clients[1] = (*old)->Advertise();
  forged.clients[1].context = ctx;
  expect_refused(forged, "roster entry of client 2: the signature over its keys does not verify");

  // The server refuses a signature that does not match the keys, and a key not matching its
  // certificate is refused when a client is created.
  auto server = Server::Create(ctx, MakeParams(2, 0, 8), 3);
  ASSERT_TRUE(server.ok());
  AdvertiseKeys tampered = clients_[1]->Advertise();
  tampered.s_public = (*mitm)->Advertise().s_public;
  EXPECT_EQ((*server)->AddAdvertisement(tampered).code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE((*server)->AddAdvertisement(clients_[1]->Advertise()).ok());
  ClientOptions mismatched = Signed(ctx, 4, "site-a");
  mismatched.key_pem = Read("ca/site-b.key");
  EXPECT_EQ(Client::Create(mismatched).status().code(), StatusCode::kInvalidArgument);

  // The untouched roster is accepted.
  EXPECT_TRUE(clients_[0]->Share(mine).ok());
}

}  // namespace
}  // namespace mlink::protocol::secagg
