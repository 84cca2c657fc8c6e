#include "secagg_participant.h"

#include <algorithm>
#include <variant>

namespace mlink::edge {

namespace secagg = protocol::secagg;

namespace {
protocol::SecAgg Envelope(const std::string& link_id, const secagg::Message& m) {
  return protocol::SecAgg{link_id, secagg::Serialize(m)};
}
}  // namespace

Result<protocol::SecAgg> SecAggParticipant::Begin(const std::string& link_id, uint64_t round,
                                                  std::vector<float> delta) {
  client_.reset();
  secagg::ClientOptions o;
  o.context = {link_id, round};
  o.key_pem = key_pem_;
  o.certificate_pem = certificate_pem_;
  o.ca_pem = ca_pem_;
  MLINK_ASSIGN_OR_RETURN(client_, secagg::Client::Create(o));
  link_id_ = link_id;
  round_ = round;
  input_ = std::move(delta);
  input_.push_back(1.0f);  // the weight: `mean` aggregation
  clipped_ = 0;
  return Envelope(link_id_, client_->Advertise());
}

Result<std::optional<protocol::SecAgg>> SecAggParticipant::OnMessage(
    const protocol::SecAgg& message, bool* finished) {
  *finished = false;
  MLINK_ASSIGN_OR_RETURN(secagg::Message m,
                         secagg::Parse(message.payload.data(), message.payload.size()));
  const secagg::Context& ctx =
      std::visit([](const auto& x) -> const secagg::Context& { return x.context; }, m);
  if (!client_ || ctx.link_id != link_id_ || ctx.round != round_)
    return std::optional<protocol::SecAgg>();
  if (auto* roster = std::get_if<secagg::Roster>(&m)) {
    clip_ = roster->params.clip;
    MLINK_ASSIGN_OR_RETURN(secagg::ShareKeys shares, client_->Share(*roster));
    return std::optional<protocol::SecAgg>(Envelope(link_id_, shares));
  }
  if (auto* incoming = std::get_if<secagg::IncomingShares>(&m)) {
    std::vector<float> x = input_;
    for (float& v : x) {
      const float c = std::clamp(v, static_cast<float>(-clip_), static_cast<float>(clip_));
      clipped_ += c != v;
      v = c;
    }
    MLINK_ASSIGN_OR_RETURN(secagg::MaskedInput y, client_->Mask(*incoming, x));
    input_.clear();  // only the masked form leaves the edge; nothing else needs it
    return std::optional<protocol::SecAgg>(Envelope(link_id_, y));
  }
  if (auto* request = std::get_if<secagg::UnmaskRequest>(&m)) {
    MLINK_ASSIGN_OR_RETURN(secagg::UnmaskResponse r, client_->Unmask(*request));
    client_.reset();
    *finished = true;
    return std::optional<protocol::SecAgg>(Envelope(link_id_, r));
  }
  return Status::InvalidArgument("the aggregator sent a message only edges send");
}

}  // namespace mlink::edge
