// Secure aggregation of link updates: pairwise-masked, fixed-point vectors whose masks cancel in
// the sum (Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
// Learning", CCS 2017), over a sparse neighbour graph as in SecAgg+ (Bell et al., CCS 2020), so a
// client's cost grows with its degree, not with the number of clients.
//
// One Round of one link runs four phases between n clients (edges) and a server (aggregator):
//
//   1. AdvertiseKeys: each client sends two fresh X25519 public keys, c (encryption) and
//      s (masking). The server picks the neighbour graph and sends each client a Roster of its
//      neighbours' keys.
//   2. ShareKeys: each client Shamir-shares its s private key and a fresh self-mask seed b,
//      t-of-k among its k neighbours (the Harary graph of the Roster), and encrypts each
//      neighbour's pair of shares with AES-256-GCM under a key derived from the c agreement.
//      The server routes the ciphertexts; the clients that shared form U2.
//   3. MaskedInput: each client in U2 sends y = x + PRG(b) + sum_j +-PRG(s_ij) mod 2^32 over
//      its fixed-point input x, j ranging over its neighbours in U2 (+ if i < j, - if i > j).
//      The server only adds the y's; the clients that sent one form U3 (the survivors).
//   4. Unmasking: each survivor reveals, for each neighbour j in U2, the b share of j if j is a
//      survivor and the s share of j if j dropped (never both). From >= t shares per client the
//      server rebuilds each survivor's b and each dropped client's s key, removes PRG(b_j) and the
//      pairwise masks the survivors still hold with dropped clients, and learns only the sum.
//
// Every key derivation and every AES-GCM associated data binds the round's Context (link id and
// round number), and the keys are fresh per round, so material from another round or link fails
// to decrypt. Threat model: an honest-but-curious server and any set of clients below the
// threshold learn nothing about an individual input beyond the sum. The server relays the public
// keys, so an actively malicious server could substitute its own; against that, a client may
// sign its advertisement with its TLS identity (the edge certificate's key) and require every
// roster entry to carry a client certificate from the deployment CA, a distinct identity and a
// valid signature (ClientOptions), as SecAgg's malicious variant signs its keys. A malicious
// server can still tell clients different survivor sets (SecAgg's consistency round is not
// implemented), and the sum itself is what it learns.
//
// Everything here is network-independent and torch-free; callers move the message structs.
// Client and Server are not thread-safe; use one per round from one thread (or strand).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "mlink/common/status.h"

namespace mlink::protocol::secagg {

using Bytes = std::vector<uint8_t>;
inline constexpr std::size_t kKeyBytes = 32;  // X25519 public/private keys, seeds

// What a round is bound to. Every key derivation and every associated data includes it.
struct Context {
  std::string link_id;
  uint64_t round = 0;
  bool operator==(const Context& o) const { return link_id == o.link_id && round == o.round; }
  bool operator!=(const Context& o) const { return !(*this == o); }
};

// Round parameters, chosen by the server and sent to the clients in the Roster.
struct Params {
  // Shares needed to rebuild one client's secrets (t). At least 2 and at most the degree; above
  // half the degree, no two disjoint sets of neighbours can both rebuild a client's secrets.
  uint32_t threshold = 2;
  // Neighbours per client (k). 0 means every other client (the complete graph of SecAgg);
  // otherwise even, and the graph is the Harary graph H(k, n) over a seeded permutation.
  uint32_t degree = 0;
  uint64_t graph_seed = 0;
  // Fixed point: x is sent as round(x * 2^frac_bits) mod 2^32. Inputs must satisfy
  // |x| <= clip, and n * clip * 2^frac_bits must stay below 2^31 so the sum cannot wrap.
  uint32_t frac_bits = 16;
  double clip = 64.0;
  uint32_t length = 0;  // elements per input vector
};

// Phase 1, client -> server.
struct AdvertiseKeys {
  Context context;
  // 1..n. The server assigns it (a client may send 0 and learn its index from its Roster);
  // the server's caller sets it before AddAdvertisement.
  uint32_t client = 0;
  Bytes c_public;  // kKeyBytes, encryption agreement
  Bytes s_public;  // kKeyBytes, mask agreement
  // Optional: the client's TLS certificate (PEM) and its key's signature (SHA-256) over
  // "mlink-secagg-advertise-v1" || context || client || c_public || s_public. The server must
  // check that the certificate is the one its TLS peer presented. The index is not signed:
  // the certificate is the identity, the index only a label within the round.
  std::string certificate_pem;
  Bytes signature;
};

// Phase 1 result, server -> each client: that client's own entry and its neighbours' (so a
// client's download grows with its degree, not with the number of clients).
struct Roster {
  Context context;
  Params params;
  uint32_t total_clients = 0;          // n, for the fixed-point range check
  uint32_t recipient = 0;              // the index of the client this roster is for
  std::vector<AdvertiseKeys> clients;  // the recipient and its neighbours, sorted, unique
};

// Phase 2: one neighbour's shares of the sender's secrets, encrypted to that neighbour.
struct EncryptedShare {
  uint32_t from = 0;
  uint32_t to = 0;
  Bytes ciphertext;  // 12-byte nonce || AES-256-GCM(from, to, b share, s share) || 16-byte tag
};

// Phase 2, client -> server (one per neighbour).
struct ShareKeys {
  Context context;
  uint32_t client = 0;
  std::vector<EncryptedShare> shares;
};

// Phase 2 result, server -> one client: the shares addressed to it, one per neighbour in U2.
struct IncomingShares {
  Context context;
  uint32_t client = 0;
  std::vector<EncryptedShare> shares;
};

// Phase 3, client -> server.
struct MaskedInput {
  Context context;
  uint32_t client = 0;
  std::vector<uint32_t> masked;  // Params::length words
};

// Phase 4, server -> every survivor.
struct UnmaskRequest {
  Context context;
  std::vector<uint32_t> survivors;  // U3, sorted
};

// One revealed Shamir share of `owner`'s b seed (owner survived) or s key (owner dropped).
struct RevealedShare {
  uint32_t owner = 0;
  bool is_mask_key = false;  // false: b share; true: s share
  Bytes share;
};

// Phase 4, client -> server.
struct UnmaskResponse {
  Context context;
  uint32_t client = 0;
  std::vector<RevealedShare> shares;
};

// The aggregate the server learns.
struct AggregateResult {
  std::vector<double> sum;          // decoded sum of the survivors' inputs
  std::vector<uint32_t> survivors;  // U3
  std::vector<uint32_t> dropped;    // U2 \ U3: shared keys but sent no input
};

// The subject CN of a PEM certificate (InvalidArgument if it is not one or has no CN).
Result<std::string> CertificateSubject(const std::string& certificate_pem);

// Checks Params against the number of clients n (threshold, degree, fixed-point range).
Status ValidateParams(const Params& params, uint32_t n);

// The neighbour graph of `clients` (any distinct ids): for each id, its neighbours, sorted.
// Symmetric, connected, every vertex of degree min(degree, n-1) (all others when degree is 0 or
// >= n-1). Deterministic in (clients, degree, seed) on every platform.
std::map<uint32_t, std::vector<uint32_t>> NeighbourGraph(const std::vector<uint32_t>& clients,
                                                         uint32_t degree, uint64_t seed);

// Fixed-point encoding. Errors: a non-finite value (InvalidArgument) or |x| > clip (OutOfRange).
Result<std::vector<uint32_t>> EncodeFixedPoint(const std::vector<float>& x, const Params& params);
std::vector<double> DecodeFixedPoint(const std::vector<uint32_t>& sum, const Params& params);

// Shamir t-of-n sharing of a kKeyBytes secret over GF(2^61 - 1) (the secret as five 56-bit
// limbs). A share is the evaluation point (u32) followed by five u64 limbs, little-endian.
Result<std::vector<Bytes>> ShamirSplit(const Bytes& secret, uint32_t threshold,
                                       const std::vector<uint32_t>& points);
// Any `threshold` or more distinct shares; errors name what was wrong (too few, duplicate points,
// malformed or inconsistent shares).
Result<Bytes> ShamirCombine(const std::vector<Bytes>& shares, uint32_t threshold);

// A client's TLS identity, used to sign its advertised keys.
struct Identity {
  std::string key_pem;          // private key (PEM)
  std::string certificate_pem;  // its certificate (PEM), issued by the deployment CA
};

struct ClientOptions {
  Context context;
  uint32_t client = 0;  // the index the server assigned, or 0: learnt from the Roster
  // When both are set, the advertisement is signed (the key must match the certificate).
  std::string key_pem;
  std::string certificate_pem;
  // When set, every roster entry must carry a certificate that chains to this CA (PEM) with
  // client-authentication purpose, an identity (subject CN) no other entry has, and a valid
  // signature over its keys; otherwise Share fails with PermissionDenied naming the entry.
  std::string ca_pem;
};

// One client's side of one round.
class Client {
 public:
  // Generates the round's key pairs (and signs them when options carry an identity).
  static Result<std::unique_ptr<Client>> Create(const ClientOptions& options);
  // Unsigned, no roster checks beyond the protocol's; `client` may be 0 (learnt from the Roster).
  static Result<std::unique_ptr<Client>> Create(const Context& context, uint32_t client);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const AdvertiseKeys& Advertise() const { return advertise_; }

  // Checks the roster (our context, ourselves with our own keys, well-formed distinct keys,
  // params valid for its size, as many neighbours as the degree says) and encrypts the shares
  // of our secrets to every other client in it (our neighbours).
  Result<ShareKeys> Share(const Roster& roster);

  // Decrypts the shares addressed to us (any failure names the sender: tampered, replayed from
  // another round or link, or not from a neighbour) and masks `input`.
  Result<MaskedInput> Mask(const IncomingShares& incoming, const std::vector<float>& input);

  // Reveals the shares the server needs. Answered at most once per round, and refused when the
  // survivors among our neighbours are fewer than the threshold.
  Result<UnmaskResponse> Unmask(const UnmaskRequest& request);

 private:
  struct Keys;
  Client(const Context& context, uint32_t client);

  enum class Phase { kAdvertised, kShared, kMasked, kDone };
  Context context_;
  uint32_t client_;
  std::string ca_pem_;
  Phase phase_ = Phase::kAdvertised;
  std::unique_ptr<Keys> keys_;
  AdvertiseKeys advertise_;
  Params params_;
  std::map<uint32_t, AdvertiseKeys> neighbours_;      // from the roster
  std::map<uint32_t, std::pair<Bytes, Bytes>> held_;  // owner -> (b share, s share), U2 only
};

// The server's side of one round. Holds only the running sum of masked inputs, never an
// individual input in the clear.
class Server {
 public:
  // `min_clients`: fewest clients that may take part in any phase (at least threshold + 1).
  static Result<std::unique_ptr<Server>> Create(const Context& context, const Params& params,
                                                uint32_t min_clients);

  // Phase 1. Errors: another context, client index 0, duplicate index, malformed or weak keys,
  // a signature that does not verify with the certificate carried (the certificate's chain and
  // its match with the TLS peer are the caller's and the clients' checks).
  Status AddAdvertisement(const AdvertiseKeys& message);
  // One roster per client, by client index.
  Result<std::map<uint32_t, Roster>> CloseAdvertising();

  // Phase 2. Errors: another context, not in the roster, duplicate, shares not addressed to
  // exactly the sender's neighbours.
  Status AddShareKeys(const ShareKeys& message);
  // Routes the shares; a client whose neighbours did not all share only gets those that did.
  Result<std::map<uint32_t, IncomingShares>> CloseSharing();

  // Phase 3. Errors: another context, not in U2, duplicate, wrong length.
  Status AddMaskedInput(const MaskedInput& message);
  // Fails when fewer than min_clients sent an input.
  Result<UnmaskRequest> CloseMasking();

  // Phase 4. Errors: another context, not a survivor, duplicate, a share for a non-neighbour or
  // of the wrong kind.
  Status AddUnmaskResponse(const UnmaskResponse& message);
  // Rebuilds the survivors' b seeds and the dropped clients' s keys and removes their masks.
  // Fails (FailedPrecondition, naming the client and the counts) when some client has fewer than
  // `threshold` shares, or (DataLoss) when shares are inconsistent.
  Result<AggregateResult> Finish();

  const std::vector<uint32_t>& masked_sum() const { return sum_; }  // sum of the y's, mod 2^32

 private:
  Server(const Context& context, const Params& params, uint32_t min_clients);

  enum class Phase { kAdvertising, kSharing, kMasking, kUnmasking, kDone };
  Context context_;
  Params params_;
  uint32_t min_clients_;
  Phase phase_ = Phase::kAdvertising;
  std::map<uint32_t, AdvertiseKeys> roster_;
  std::map<uint32_t, std::vector<uint32_t>> graph_;
  std::map<uint32_t, ShareKeys> shared_;  // U2
  std::set<uint32_t> masked_;             // U3
  std::vector<uint32_t> sum_;
  std::map<uint32_t, UnmaskResponse> responses_;
};

// ---------------------------------------------------------------------------------------------
// Payload encoding (protocol/secagg.md): one byte naming the message, the context, then its
// fields; integers little-endian and fixed width, byte strings and lists prefixed by a u64 count.

using Message = std::variant<AdvertiseKeys, Roster, ShareKeys, IncomingShares, MaskedInput,
                             UnmaskRequest, UnmaskResponse>;

struct PayloadLimits {
  std::size_t max_string = 256;        // the link id
  std::size_t max_blob = 8192;         // a key, ciphertext, share, certificate or signature
  std::size_t max_entries = 1u << 20;  // roster entries, shares, survivors
  std::size_t max_words = 16u << 20;   // words of a masked input
};

Bytes Serialize(const Message& message);
// Sizes are checked against the limits (OutOfRange) and the bytes left (InvalidArgument) before
// anything is allocated; an unknown kind, a bad flag, a short or long payload is InvalidArgument.
Result<Message> Parse(const uint8_t* data, std::size_t size,
                      const PayloadLimits& limits = PayloadLimits());

// Bytes a message costs on the federation wire: its payload in a protocol::SecAgg frame (12-byte
// header, endianness marker, u64-prefixed link id, u64-prefixed payload).
inline constexpr std::size_t kEnvelopeBytes = 12 + 1 + 8 + 8;  // plus the link id's bytes
std::size_t WireBytes(const Message& message);

}  // namespace mlink::protocol::secagg
