#include "secagg_round.h"

#include <algorithm>
#include <random>
#include <variant>

#include "mlink/common/log.h"

namespace mlink::cloud {

namespace secagg = protocol::secagg;

namespace {

SecAggRound::Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<SecAggRound::Clock::duration>(std::chrono::duration<double>(s));
}

const char* KindName(const secagg::Message& m) {
  static const char* kNames[] = {"AdvertiseKeys",  "Roster",      "ShareKeys",
                                 "IncomingShares", "MaskedInput", "UnmaskRequest",
                                 "UnmaskResponse"};
  return kNames[m.index()];
}

}  // namespace

SecAggRound::SecAggRound(const std::string& link_id, uint64_t round, const LinkOptions& options,
                         uint32_t length, Clock::time_point now)
    : link_id_(link_id),
      round_(round),
      options_(options),
      length_(length),
      deadline_(now + Seconds(options.round_deadline_s)) {}

const char* SecAggRound::phase_name() const {
  switch (phase_) {
    case Phase::kAdvertising:
      return "advertising";
    case Phase::kSharing:
      return "sharing";
    case Phase::kMasking:
      return "masking";
    case Phase::kUnmasking:
      return "unmasking";
    case Phase::kOver:
      break;
  }
  return "over";
}

std::vector<std::string> SecAggRound::Edges(const std::vector<uint32_t>& indices) const {
  std::vector<std::string> out;
  for (uint32_t i : indices) {
    auto it = edge_of_.find(i);
    if (it != edge_of_.end()) out.push_back(it->second);
  }
  return out;
}

std::vector<std::string> SecAggRound::participants() const {
  std::vector<std::string> out;
  for (const auto& [idx, edge] : edge_of_) out.push_back(edge);
  return out;
}

void SecAggRound::Fail(Status status) {
  failure_ = status.WithContext("secure aggregation of link '" + link_id_ + "' round " +
                                std::to_string(round_) + " failed in " + phase_name());
  state_ = State::kFailed;
  phase_ = Phase::kOver;
}

SecAggRound::Clock::time_point SecAggRound::PhaseDeadline(Clock::time_point now) const {
  return now + Seconds(options_.secure_aggregation.phase_timeout_s);
}

Status SecAggRound::OnMessage(const std::string& edge, secagg::Message message,
                              Clock::time_point now, std::vector<Outgoing>* out) {
  if (state_ != State::kRunning)
    return Status::FailedPrecondition("the secure-aggregation round is over");
  const secagg::Context& ctx =
      std::visit([](const auto& m) -> const secagg::Context& { return m.context; }, message);
  if (ctx.link_id != link_id_ || ctx.round != round_) {
    return Status::PermissionDenied("the message is for link '" + ctx.link_id + "' round " +
                                    std::to_string(ctx.round) + "; the open round is " +
                                    std::to_string(round_));
  }
  if (auto* a = std::get_if<secagg::AdvertiseKeys>(&message)) {
    if (index_of_.count(edge))
      return Status::AlreadyExists("edge '" + edge + "' already advertised keys");
    if (phase_ != Phase::kAdvertising)
      return Status::FailedPrecondition("key advertising of this round is closed");
    if (a->client != 0)
      return Status::InvalidArgument(
          "an edge advertises with client 0; the aggregator numbers edges");
    if (!a->certificate_pem.empty()) {  // signed: the certificate must be the one this edge is
      auto subject = secagg::CertificateSubject(a->certificate_pem);
      if (!subject.ok()) return subject.status();
      if (*subject != edge) {
        return Status::PermissionDenied("the keys are signed as '" + *subject +
                                        "', not as this edge ('" + edge + "')");
      }
    }
    a->client = static_cast<uint32_t>(advertised_.size() + 1);
    // Checked now (keys, signature, repeats) so a bad advertisement is refused alone.
    if (!probe_) {
      secagg::Params probe_params;
      probe_params.threshold = 1;
      probe_params.frac_bits = 0;
      probe_params.clip = 1;
      probe_params.length = length_;
      auto probe = secagg::Server::Create(ctx, probe_params, 2);
      if (!probe.ok()) return probe.status();
      probe_ = std::move(*probe);
    }
    MLINK_RETURN_IF_ERROR(probe_->AddAdvertisement(*a));
    advertised_.push_back(*a);
    index_of_[edge] = a->client;
    edge_of_[a->client] = edge;
    if (static_cast<int>(advertised_.size()) >= options_.min_edges) CloseAdvertising(now, out);
    return Status::Ok();
  }
  auto idx = index_of_.find(edge);
  if (idx == index_of_.end() || !server_) {
    return Status::PermissionDenied(
        "edge '" + edge + "' is not in this round (it advertised no keys before the close)");
  }
  Status st;
  if (auto* s = std::get_if<secagg::ShareKeys>(&message)) {
    if (s->client != idx->second)
      return Status::PermissionDenied("the shares name another edge's index");
    st = phase_ == Phase::kSharing ? server_->AddShareKeys(*s)
                                   : Status::FailedPrecondition("sharing is not open");
  } else if (auto* y = std::get_if<secagg::MaskedInput>(&message)) {
    if (y->client != idx->second)
      return Status::PermissionDenied("the input names another edge's index");
    st = phase_ == Phase::kMasking ? server_->AddMaskedInput(*y)
                                   : Status::FailedPrecondition("masking is not open");
  } else if (auto* r = std::get_if<secagg::UnmaskResponse>(&message)) {
    if (r->client != idx->second)
      return Status::PermissionDenied("the shares name another edge's index");
    st = phase_ == Phase::kUnmasking ? server_->AddUnmaskResponse(*r)
                                     : Status::FailedPrecondition("unmasking is not open");
  } else {
    return Status::InvalidArgument(std::string("edges do not send ") + KindName(message));
  }
  if (!st.ok()) return st;
  ++answered_;
  Advance(now, out);
  return Status::Ok();
}

void SecAggRound::CloseAdvertising(Clock::time_point now, std::vector<Outgoing>* out) {
  const auto n = static_cast<uint32_t>(advertised_.size());
  const SecureAggregationOptions& o = options_.secure_aggregation;
  const bool complete = o.degree == 0 || static_cast<uint32_t>(o.degree) >= n - 1;
  const uint32_t k = complete ? n - 1 : static_cast<uint32_t>(o.degree);
  secagg::Params p;
  p.degree = complete ? 0 : k;
  p.threshold = o.threshold > 0 ? static_cast<uint32_t>(o.threshold) : k / 2 + 1;
  p.graph_seed = std::random_device{}() * 0x100000001ULL ^ std::random_device{}();
  p.frac_bits = static_cast<uint32_t>(o.frac_bits);
  p.clip = o.clip;
  p.length = length_;
  const uint32_t min_clients =
      std::max<uint32_t>(static_cast<uint32_t>(std::max(options_.quorum, 1)), p.threshold + 1);
  auto server = secagg::Server::Create({link_id_, round_}, p, min_clients);
  if (!server.ok()) return Fail(server.status());
  for (const auto& a : advertised_) {
    Status st = (*server)->AddAdvertisement(a);
    if (!st.ok()) return Fail(st);
  }
  auto rosters = (*server)->CloseAdvertising();
  if (!rosters.ok()) return Fail(rosters.status());
  server_ = std::move(*server);
  probe_.reset();
  for (auto& [idx, roster] : *rosters) out->push_back({edge_of_.at(idx), std::move(roster)});
  MLOG_INFO("cloud", "secure aggregation: keys advertised")
      .Kv("link", link_id_)
      .Kv("round", round_)
      .Kv("edges", n)
      .Kv("degree", k)
      .Kv("threshold", p.threshold);
  phase_ = Phase::kSharing;
  expected_ = n;
  answered_ = 0;
  deadline_ = PhaseDeadline(now);
}

void SecAggRound::Advance(Clock::time_point now, std::vector<Outgoing>* out) {
  if (state_ != State::kRunning) return;
  const bool due = now >= deadline_;
  switch (phase_) {
    case Phase::kAdvertising: {
      if (!due) return;
      const auto n = static_cast<int>(advertised_.size());
      const SecureAggregationOptions& o = options_.secure_aggregation;
      const int k = n - 1 <= o.degree || o.degree == 0 ? n - 1 : o.degree;
      const int t = o.threshold > 0 ? o.threshold : k / 2 + 1;
      if (n >= 3 && n >= options_.quorum && n >= t + 1) {
        MLOG_INFO("cloud", "secure aggregation: deadline reached with quorum")
            .Kv("link", link_id_)
            .Kv("round", round_)
            .Kv("edges", n);
        return CloseAdvertising(now, out);
      }
      if (n > 0) {
        MLOG_WARN("cloud", "secure aggregation: deadline passed below quorum; extending")
            .Kv("link", link_id_)
            .Kv("round", round_)
            .Kv("edges", n)
            .Kv("quorum", std::max({options_.quorum, t + 1, 3}));
      }
      deadline_ = now + Seconds(options_.round_deadline_s);
      return;
    }
    case Phase::kSharing: {
      if (answered_ < expected_ && !due) return;
      auto routed = server_->CloseSharing();
      if (!routed.ok()) return Fail(routed.status());
      for (auto& [idx, incoming] : *routed) out->push_back({edge_of_.at(idx), std::move(incoming)});
      MLOG_INFO("cloud", "secure aggregation: keys shared")
          .Kv("link", link_id_)
          .Kv("round", round_)
          .Kv("edges", routed->size())
          .Kv("advertised", expected_);
      phase_ = Phase::kMasking;
      expected_ = routed->size();
      break;
    }
    case Phase::kMasking: {
      if (answered_ < expected_ && !due) return;
      auto request = server_->CloseMasking();
      if (!request.ok()) return Fail(request.status());
      for (uint32_t idx : request->survivors) out->push_back({edge_of_.at(idx), *request});
      MLOG_INFO("cloud", "secure aggregation: masked inputs in")
          .Kv("link", link_id_)
          .Kv("round", round_)
          .Kv("inputs", request->survivors.size())
          .Kv("sharing_edges", expected_);
      phase_ = Phase::kUnmasking;
      expected_ = request->survivors.size();
      break;
    }
    case Phase::kUnmasking: {
      if (answered_ < expected_ && !due) return;
      auto result = server_->Finish();
      if (!result.ok()) return Fail(result.status());
      result_ = std::move(*result);
      phase_ = Phase::kOver;
      state_ = State::kDone;
      return;
    }
    case Phase::kOver:
      return;
  }
  answered_ = 0;
  deadline_ = PhaseDeadline(now);
}

}  // namespace mlink::cloud
