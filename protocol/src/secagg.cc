#include "mlink/protocol/secagg.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

namespace mlink::protocol::secagg {
namespace {

// ---------------------------------------------------------------------------------------------
// OpenSSL plumbing: owned handles and errors.

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct StoreFree {
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using StorePtr = std::unique_ptr<X509_STORE, StoreFree>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, StoreCtxFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

Status OpensslError(const std::string& what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return Status::Internal(what + ": " + buf);
}

constexpr std::size_t kNonceBytes = 12;
constexpr std::size_t kTagBytes = 16;
constexpr uint64_t kPrime = (uint64_t{1} << 61) - 1;  // GF(2^61 - 1)
constexpr std::size_t kLimbs = 5;                     // 32 bytes as 4 x 7 + 4 bytes
constexpr std::size_t kShareBytes = 4 + 8 * kLimbs;
// Share plaintext: u32 from, u32 to, b share, s share.
constexpr std::size_t kSharePlainBytes = 8 + 2 * kShareBytes;
constexpr std::size_t kShareCipherBytes = kNonceBytes + kSharePlainBytes + kTagBytes;
const char kSalt[] = "mlink-secagg-v1";

void PutU32(Bytes* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutU64(Bytes* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// The bytes every derivation and every associated data starts with.
Bytes ContextBytes(const Context& c) {
  Bytes out;
  PutU64(&out, c.link_id.size());
  out.insert(out.end(), c.link_id.begin(), c.link_id.end());
  PutU64(&out, c.round);
  return out;
}

std::string Where(const Context& c) {
  return "link '" + c.link_id + "' round " + std::to_string(c.round);
}

Result<Bytes> RandomBytes(std::size_t n) {
  Bytes out(n);
  if (RAND_bytes(out.data(), static_cast<int>(n)) != 1) return OpensslError("RAND_bytes");
  return out;
}

struct KeyPair {
  PkeyPtr key;
  Bytes public_key;
  Bytes private_key;
};

Result<KeyPair> GenerateX25519() {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return OpensslError("X25519 key generation");
  }
  KeyPair kp;
  kp.key.reset(raw);
  kp.public_key.resize(kKeyBytes);
  kp.private_key.resize(kKeyBytes);
  std::size_t pub_len = kKeyBytes, priv_len = kKeyBytes;
  if (EVP_PKEY_get_raw_public_key(raw, kp.public_key.data(), &pub_len) != 1 ||
      EVP_PKEY_get_raw_private_key(raw, kp.private_key.data(), &priv_len) != 1 ||
      pub_len != kKeyBytes || priv_len != kKeyBytes) {
    return OpensslError("X25519 raw key export");
  }
  return kp;
}

Result<PkeyPtr> PrivateFromRaw(const Bytes& raw) {
  if (raw.size() != kKeyBytes) return Status::DataLoss("X25519 private key is not 32 bytes");
  PkeyPtr key(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, raw.data(), raw.size()));
  if (!key) return OpensslError("X25519 private key import");
  return key;
}

Result<Bytes> PublicOf(EVP_PKEY* key) {
  Bytes pub(kKeyBytes);
  std::size_t len = kKeyBytes;
  if (EVP_PKEY_get_raw_public_key(key, pub.data(), &len) != 1 || len != kKeyBytes) {
    return OpensslError("X25519 public key export");
  }
  return pub;
}

// X25519(own, peer). Fails for a malformed peer key and for a low-order point (all-zero output).
Result<Bytes> Agree(EVP_PKEY* own, const Bytes& peer_public) {
  if (peer_public.size() != kKeyBytes) {
    return Status::InvalidArgument("public key has " + std::to_string(peer_public.size()) +
                                   " bytes, expected 32");
  }
  PkeyPtr peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public.data(),
                                           peer_public.size()));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new(own, nullptr));
  Bytes secret(kKeyBytes);
  std::size_t len = kKeyBytes;
  if (!peer || !ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), secret.data(), &len) != 1 || len != kKeyBytes) {
    ERR_clear_error();
    return Status::InvalidArgument(
        "public key is not a usable X25519 key (malformed or low order)");
  }
  return secret;
}

// HKDF-SHA256(ikm, salt = kSalt, info = label || context) -> 32 bytes.
Result<Bytes> Derive(const Bytes& ikm, const std::string& label, const Context& context) {
  Bytes info(label.begin(), label.end());
  Bytes c = ContextBytes(context);
  info.insert(info.end(), c.begin(), c.end());
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  Bytes out(kKeyBytes);
  std::size_t len = out.size();
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), reinterpret_cast<const unsigned char*>(kSalt),
                                  sizeof(kSalt) - 1) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), ikm.data(), static_cast<int>(ikm.size())) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), info.data(), static_cast<int>(info.size())) != 1 ||
      EVP_PKEY_derive(ctx.get(), out.data(), &len) != 1) {
    return OpensslError("HKDF-SHA256");
  }
  return out;
}

Result<Bytes> Seal(const Bytes& key, const Bytes& aad, const Bytes& plain) {
  MLINK_ASSIGN_OR_RETURN(Bytes out, RandomBytes(kNonceBytes));
  out.resize(kNonceBytes + plain.size() + kTagBytes);
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), out.data()) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out.data() + kNonceBytes, &len, plain.data(),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + kNonceBytes + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes,
                          out.data() + kNonceBytes + plain.size()) != 1) {
    return OpensslError("AES-256-GCM seal");
  }
  return out;
}

// Fails (PermissionDenied) when the ciphertext, its key or its associated data differ.
Result<Bytes> Open(const Bytes& key, const Bytes& aad, const Bytes& sealed) {
  if (sealed.size() < kNonceBytes + kTagBytes)
    return Status::PermissionDenied("ciphertext too short");
  const std::size_t n = sealed.size() - kNonceBytes - kTagBytes;
  Bytes plain(n);
  Bytes tag(sealed.end() - kTagBytes, sealed.end());
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), sealed.data()) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), plain.data(), &len, sealed.data() + kNonceBytes,
                        static_cast<int>(n)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), plain.data() + len, &len) != 1) {
    ERR_clear_error();
    return Status::PermissionDenied("ciphertext does not authenticate");
  }
  return plain;
}

// acc += sign * PRG(seed), word-wise mod 2^32. The PRG is AES-256-CTR keyed by the seed from a
// zero counter, read as little-endian u32 words.
Status AddPrg(const Bytes& seed, bool subtract, std::vector<uint32_t>* acc) {
  static const uint8_t kZeroIv[16] = {0};
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_ctr(), nullptr, seed.data(), kZeroIv) != 1) {
    return OpensslError("AES-256-CTR init");
  }
  constexpr std::size_t kChunkWords = 4096;
  static const Bytes kZeros(kChunkWords * 4, 0);
  Bytes stream(kChunkWords * 4);
  for (std::size_t start = 0; start < acc->size(); start += kChunkWords) {
    const std::size_t words = std::min(kChunkWords, acc->size() - start);
    int len = 0;
    if (EVP_EncryptUpdate(ctx.get(), stream.data(), &len, kZeros.data(),
                          static_cast<int>(words * 4)) != 1) {
      return OpensslError("AES-256-CTR stream");
    }
    uint32_t* out = acc->data() + start;
    for (std::size_t w = 0; w < words; ++w) {
      const uint32_t r = GetU32(stream.data() + 4 * w);
      out[w] = subtract ? out[w] - r : out[w] + r;
    }
  }
  return Status::Ok();
}

Result<Bytes> MaskSeed(EVP_PKEY* own_s, const Bytes& peer_s_public, const Context& context) {
  MLINK_ASSIGN_OR_RETURN(Bytes shared, Agree(own_s, peer_s_public));
  return Derive(shared, "mask", context);
}

Result<Bytes> EncryptionKey(EVP_PKEY* own_c, const Bytes& peer_c_public, const Context& context) {
  MLINK_ASSIGN_OR_RETURN(Bytes shared, Agree(own_c, peer_c_public));
  return Derive(shared, "share-encryption", context);
}

Bytes ShareAad(const Context& context, uint32_t from, uint32_t to) {
  Bytes aad = ContextBytes(context);
  PutU32(&aad, from);
  PutU32(&aad, to);
  return aad;
}

// ---------------------------------------------------------------------------------------------
// Signed advertisements: the edge's TLS identity vouches for its round keys.

Result<X509Ptr> ParseCertificate(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) {
    ERR_clear_error();
    return Status::InvalidArgument("not a PEM certificate");
  }
  return cert;
}

Result<PkeyPtr> ParsePrivateKey(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    ERR_clear_error();
    return Status::InvalidArgument("not a PEM private key");
  }
  return key;
}

// Ed25519/Ed448 sign the message itself; every other key type signs its SHA-256.
const EVP_MD* DigestFor(EVP_PKEY* key) {
  const int id = EVP_PKEY_base_id(key);
  return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
}

Bytes AdvertisedBytes(const AdvertiseKeys& a) {
  static const char kLabel[] = "mlink-secagg-advertise-v1";
  Bytes out(kLabel, kLabel + sizeof(kLabel) - 1);
  Bytes c = ContextBytes(a.context);
  out.insert(out.end(), c.begin(), c.end());
  out.insert(out.end(), a.c_public.begin(), a.c_public.end());
  out.insert(out.end(), a.s_public.begin(), a.s_public.end());
  return out;
}

Result<Bytes> Sign(EVP_PKEY* key, const Bytes& message) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  std::size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, DigestFor(key), nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, message.data(), message.size()) != 1) {
    return OpensslError("signing the advertised keys");
  }
  Bytes sig(len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &len, message.data(), message.size()) != 1) {
    return OpensslError("signing the advertised keys");
  }
  sig.resize(len);
  return sig;
}

// The advertisement's signature verifies with the public key of the certificate it carries.
Status VerifyAdvertisement(const AdvertiseKeys& a, X509* cert) {
  EVP_PKEY* key = X509_get0_pubkey(cert);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  const Bytes message = AdvertisedBytes(a);
  if (!key || !ctx || a.signature.empty() ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, DigestFor(key), nullptr, key) != 1 ||
      EVP_DigestVerify(ctx.get(), a.signature.data(), a.signature.size(), message.data(),
                       message.size()) != 1) {
    ERR_clear_error();
    return Status::PermissionDenied(
        "the signature over its keys does not verify with its certificate");
  }
  return Status::Ok();
}

// Chains `cert` to `ca` for client authentication; returns its subject CN.
Result<std::string> VerifyClientCertificate(X509* cert, X509* ca) {
  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert, nullptr) != 1 ||
      X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT) != 1) {
    return OpensslError("certificate verification set-up");
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    const int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return Status::PermissionDenied(
        std::string("its certificate is not a client certificate of the deployment CA (") +
        X509_verify_cert_error_string(err) + ")");
  }
  char cn[257] = {0};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) <= 0) {
    ERR_clear_error();
    return Status::PermissionDenied("its certificate has no subject CN");
  }
  return std::string(cn);
}

// ---------------------------------------------------------------------------------------------
// GF(2^61 - 1).

uint64_t Mul(uint64_t a, uint64_t b) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) % kPrime);
}
uint64_t Add(uint64_t a, uint64_t b) { return (a + b) % kPrime; }
uint64_t Sub(uint64_t a, uint64_t b) { return (a + kPrime - b) % kPrime; }
uint64_t Inverse(uint64_t a) {  // a^(p-2), a != 0
  uint64_t result = 1, base = a, e = kPrime - 2;
  while (e > 0) {
    if (e & 1) result = Mul(result, base);
    base = Mul(base, base);
    e >>= 1;
  }
  return result;
}

Result<uint64_t> RandomElement() {
  for (;;) {
    uint8_t buf[8];
    if (RAND_bytes(buf, sizeof buf) != 1) return OpensslError("RAND_bytes");
    const uint64_t v = GetU64(buf) & kPrime;
    if (v < kPrime) return v;
  }
}

std::size_t LimbBytes(std::size_t limb) { return limb + 1 < kLimbs ? 7 : 4; }

struct ParsedShare {
  uint32_t point = 0;
  uint64_t limbs[kLimbs] = {};
};

Result<ParsedShare> ParseShare(const Bytes& share) {
  if (share.size() != kShareBytes) {
    return Status::InvalidArgument("a share has " + std::to_string(share.size()) +
                                   " bytes, expected " + std::to_string(kShareBytes));
  }
  ParsedShare p;
  p.point = GetU32(share.data());
  if (p.point == 0) return Status::InvalidArgument("a share is evaluated at 0");
  for (std::size_t l = 0; l < kLimbs; ++l) {
    p.limbs[l] = GetU64(share.data() + 4 + 8 * l);
    if (p.limbs[l] >= kPrime) return Status::InvalidArgument("a share value is outside the field");
  }
  return p;
}

// Lagrange interpolation at 0 of limb `l` through shares[first, first + t).
uint64_t InterpolateAtZero(const std::vector<ParsedShare>& shares, std::size_t first, std::size_t t,
                           std::size_t l) {
  uint64_t secret = 0;
  for (std::size_t i = first; i < first + t; ++i) {
    uint64_t num = 1, den = 1;
    for (std::size_t j = first; j < first + t; ++j) {
      if (j == i) continue;
      num = Mul(num, shares[j].point);
      den = Mul(den, Sub(shares[j].point, shares[i].point));
    }
    secret = Add(secret, Mul(shares[i].limbs[l], Mul(num, Inverse(den))));
  }
  return secret;
}

// ---------------------------------------------------------------------------------------------
// Deterministic permutation for the neighbour graph (splitmix64; the same on every platform).

uint64_t SplitMix(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

bool Contains(const std::vector<uint32_t>& sorted, uint32_t v) {
  return std::binary_search(sorted.begin(), sorted.end(), v);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Result<std::string> CertificateSubject(const std::string& certificate_pem) {
  MLINK_ASSIGN_OR_RETURN(X509Ptr cert, ParseCertificate(certificate_pem));
  char cn[257] = {0};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof cn) <=
      0) {
    ERR_clear_error();
    return Status::InvalidArgument("the certificate has no subject CN");
  }
  return std::string(cn);
}

Status ValidateParams(const Params& p, uint32_t n) {
  if (n < 2)
    return Status::FailedPrecondition("secure aggregation needs at least 2 clients, got " +
                                      std::to_string(n));
  if (p.length == 0) return Status::InvalidArgument("secure aggregation: input length is 0");
  if (p.frac_bits > 30) return Status::InvalidArgument("secure aggregation: frac_bits above 30");
  if (!(p.clip > 0) || !std::isfinite(p.clip))
    return Status::InvalidArgument("secure aggregation: clip must be positive and finite");
  const bool complete = p.degree == 0 || p.degree >= n - 1;
  if (!complete && p.degree % 2 != 0) {
    return Status::InvalidArgument("secure aggregation: degree " + std::to_string(p.degree) +
                                   " must be even (Harary graph)");
  }
  const uint32_t k = complete ? n - 1 : p.degree;
  if (p.threshold < 1 || p.threshold > k) {
    return Status::InvalidArgument("secure aggregation: threshold " + std::to_string(p.threshold) +
                                   " must be in [1, " + std::to_string(k) + "] (the degree) for " +
                                   std::to_string(n) + " clients");
  }
  const double worst =
      static_cast<double>(n) * p.clip * std::ldexp(1.0, static_cast<int>(p.frac_bits));
  if (worst >= std::ldexp(1.0, 31)) {
    return Status::OutOfRange("secure aggregation: " + std::to_string(n) + " clients x clip " +
                              std::to_string(p.clip) + " x 2^" + std::to_string(p.frac_bits) +
                              " does not fit the 32-bit sum; lower clip or frac_bits");
  }
  return Status::Ok();
}

std::map<uint32_t, std::vector<uint32_t>> NeighbourGraph(const std::vector<uint32_t>& clients,
                                                         uint32_t degree, uint64_t seed) {
  std::vector<uint32_t> ids = clients;
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  const std::size_t n = ids.size();
  std::map<uint32_t, std::vector<uint32_t>> graph;
  if (n == 0) return graph;
  if (degree == 0 || degree >= n - 1) {
    for (uint32_t id : ids) {
      auto& nb = graph[id];
      for (uint32_t other : ids) {
        if (other != id) nb.push_back(other);
      }
    }
    return graph;
  }
  // Harary graph H(k, n): the clients on a ring in a seeded random order, each joined to the
  // k/2 nearest on either side. Symmetric by construction and connected (it contains the ring).
  std::vector<uint32_t> ring = ids;
  uint64_t state = seed;
  for (std::size_t i = n - 1; i > 0; --i) {
    std::swap(ring[i], ring[SplitMix(&state) % (i + 1)]);
  }
  const std::size_t half = degree / 2;
  for (std::size_t pos = 0; pos < n; ++pos) {
    auto& nb = graph[ring[pos]];
    for (std::size_t d = 1; d <= half; ++d) {
      nb.push_back(ring[(pos + d) % n]);
      nb.push_back(ring[(pos + n - d) % n]);
    }
    std::sort(nb.begin(), nb.end());
  }
  return graph;
}

Result<std::vector<uint32_t>> EncodeFixedPoint(const std::vector<float>& x, const Params& params) {
  std::vector<uint32_t> out(x.size());
  const double scale = std::ldexp(1.0, static_cast<int>(params.frac_bits));
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    if (!std::isfinite(v))
      return Status::InvalidArgument("input element " + std::to_string(i) + " is not finite");
    if (std::fabs(v) > params.clip) {
      return Status::OutOfRange("input element " + std::to_string(i) + " = " + std::to_string(v) +
                                " exceeds the clip bound " + std::to_string(params.clip));
    }
    out[i] = static_cast<uint32_t>(static_cast<int32_t>(std::llround(v * scale)));
  }
  return out;
}

std::vector<double> DecodeFixedPoint(const std::vector<uint32_t>& sum, const Params& params) {
  std::vector<double> out(sum.size());
  const double scale = std::ldexp(1.0, -static_cast<int>(params.frac_bits));
  for (std::size_t i = 0; i < sum.size(); ++i) out[i] = static_cast<int32_t>(sum[i]) * scale;
  return out;
}

Result<std::vector<Bytes>> ShamirSplit(const Bytes& secret, uint32_t threshold,
                                       const std::vector<uint32_t>& points) {
  if (secret.size() != kKeyBytes)
    return Status::InvalidArgument("Shamir: the secret must be 32 bytes");
  if (threshold < 1 || threshold > points.size()) {
    return Status::InvalidArgument("Shamir: threshold " + std::to_string(threshold) + " with " +
                                   std::to_string(points.size()) + " shares");
  }
  std::vector<uint32_t> sorted = points;
  std::sort(sorted.begin(), sorted.end());
  if (sorted.front() == 0 || std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return Status::InvalidArgument("Shamir: evaluation points must be distinct and non-zero");
  }
  // coeffs[l][0] is limb l of the secret; the others are uniform in the field.
  std::vector<std::vector<uint64_t>> coeffs(kLimbs, std::vector<uint64_t>(threshold));
  std::size_t offset = 0;
  for (std::size_t l = 0; l < kLimbs; ++l) {
    uint64_t limb = 0;
    for (std::size_t b = LimbBytes(l); b > 0; --b) limb = (limb << 8) | secret[offset + b - 1];
    offset += LimbBytes(l);
    coeffs[l][0] = limb;
    for (uint32_t c = 1; c < threshold; ++c) {
      MLINK_ASSIGN_OR_RETURN(coeffs[l][c], RandomElement());
    }
  }
  std::vector<Bytes> shares;
  shares.reserve(points.size());
  for (uint32_t x : points) {
    Bytes share;
    share.reserve(kShareBytes);
    PutU32(&share, x);
    for (std::size_t l = 0; l < kLimbs; ++l) {
      uint64_t y = 0;
      for (uint32_t c = threshold; c > 0; --c) y = Add(Mul(y, x), coeffs[l][c - 1]);
      PutU64(&share, y);
    }
    shares.push_back(std::move(share));
  }
  return shares;
}

Result<Bytes> ShamirCombine(const std::vector<Bytes>& shares, uint32_t threshold) {
  if (threshold < 1) return Status::InvalidArgument("Shamir: threshold must be at least 1");
  if (shares.size() < threshold) {
    return Status::FailedPrecondition("Shamir: " + std::to_string(shares.size()) + " shares, " +
                                      std::to_string(threshold) + " needed");
  }
  std::vector<ParsedShare> parsed;
  parsed.reserve(shares.size());
  for (const Bytes& s : shares) {
    MLINK_ASSIGN_OR_RETURN(ParsedShare p, ParseShare(s));
    for (const ParsedShare& q : parsed) {
      if (q.point == p.point)
        return Status::InvalidArgument("Shamir: two shares at point " + std::to_string(p.point));
    }
    parsed.push_back(p);
  }
  Bytes secret;
  secret.reserve(kKeyBytes);
  for (std::size_t l = 0; l < kLimbs; ++l) {
    const uint64_t limb = InterpolateAtZero(parsed, 0, threshold, l);
    // More shares than needed: the last `threshold` must agree with the first.
    if (parsed.size() > threshold &&
        InterpolateAtZero(parsed, parsed.size() - threshold, threshold, l) != limb) {
      return Status::DataLoss("Shamir: shares are inconsistent");
    }
    if (limb >> (8 * LimbBytes(l)) != 0) return Status::DataLoss("Shamir: shares are inconsistent");
    for (std::size_t b = 0; b < LimbBytes(l); ++b)
      secret.push_back(static_cast<uint8_t>(limb >> (8 * b)));
  }
  return secret;
}

// ---------------------------------------------------------------------------------------------
// Client.

struct Client::Keys {
  PkeyPtr c;                             // encryption agreement key
  PkeyPtr s;                             // mask agreement key
  Bytes s_private;                       // raw, shared with the neighbours
  Bytes b;                               // self-mask seed
  std::map<uint32_t, Bytes> share_keys;  // AES-GCM key per neighbour, derived once in Share
};

Client::Client(const Context& context, uint32_t client) : context_(context), client_(client) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::Create(const Context& context, uint32_t client) {
  ClientOptions options;
  options.context = context;
  options.client = client;
  return Create(options);
}

Result<std::unique_ptr<Client>> Client::Create(const ClientOptions& options) {
  const Context& context = options.context;
  const uint32_t client = options.client;
  if (options.key_pem.empty() != options.certificate_pem.empty()) {
    return Status::InvalidArgument(
        "secure aggregation: signing needs both key_pem and certificate_pem");
  }
  if (!options.ca_pem.empty()) {
    auto ca = ParseCertificate(options.ca_pem);
    if (!ca.ok()) return ca.status().WithContext("secure aggregation: ca_pem");
  }
  std::unique_ptr<Client> c(new Client(context, client));
  c->ca_pem_ = options.ca_pem;
  c->keys_ = std::make_unique<Keys>();
  MLINK_ASSIGN_OR_RETURN(KeyPair ck, GenerateX25519());
  MLINK_ASSIGN_OR_RETURN(KeyPair sk, GenerateX25519());
  MLINK_ASSIGN_OR_RETURN(c->keys_->b, RandomBytes(kKeyBytes));
  c->keys_->c = std::move(ck.key);
  c->keys_->s = std::move(sk.key);
  c->keys_->s_private = std::move(sk.private_key);
  c->advertise_.context = context;
  c->advertise_.client = client;
  c->advertise_.c_public = std::move(ck.public_key);
  c->advertise_.s_public = std::move(sk.public_key);
  if (!options.key_pem.empty()) {
    auto key = ParsePrivateKey(options.key_pem);
    if (!key.ok()) return key.status().WithContext("secure aggregation: key_pem");
    auto cert = ParseCertificate(options.certificate_pem);
    if (!cert.ok()) return cert.status().WithContext("secure aggregation: certificate_pem");
    if (X509_check_private_key(cert->get(), key->get()) != 1) {
      ERR_clear_error();
      return Status::InvalidArgument("secure aggregation: key_pem does not match certificate_pem");
    }
    c->advertise_.certificate_pem = options.certificate_pem;
    MLINK_ASSIGN_OR_RETURN(c->advertise_.signature,
                           Sign(key->get(), AdvertisedBytes(c->advertise_)));
  }
  return c;
}

Result<ShareKeys> Client::Share(const Roster& roster) {
  const std::string who = "client " + std::to_string(roster.recipient) + ", " + Where(context_);
  if (phase_ != Phase::kAdvertised)
    return Status::FailedPrecondition(who + ": keys already shared");
  if (roster.context != context_) {
    return Status::PermissionDenied(who + ": roster is for " + Where(roster.context));
  }
  if (roster.recipient == 0 || (client_ != 0 && roster.recipient != client_)) {
    return Status::InvalidArgument(who + ": roster is for client " +
                                   std::to_string(roster.recipient));
  }
  const uint32_t self = roster.recipient;
  neighbours_.clear();
  std::vector<uint32_t> ids;
  std::set<Bytes> keys_seen;
  bool found_self = false;
  for (const AdvertiseKeys& a : roster.clients) {
    if (a.context != context_)
      return Status::PermissionDenied(who + ": roster entry from " + Where(a.context));
    if (!ids.empty() && a.client <= ids.back())
      return Status::InvalidArgument(who + ": roster not sorted or repeats a client");
    if (a.c_public.size() != kKeyBytes || a.s_public.size() != kKeyBytes) {
      return Status::InvalidArgument(who + ": client " + std::to_string(a.client) +
                                     " has a malformed key");
    }
    if (!keys_seen.insert(a.c_public).second || !keys_seen.insert(a.s_public).second) {
      return Status::InvalidArgument(who + ": client " + std::to_string(a.client) +
                                     " repeats a key");
    }
    if (a.client == self) {
      if (a.c_public != advertise_.c_public || a.s_public != advertise_.s_public) {
        return Status::PermissionDenied(who + ": the roster carries other keys for this client");
      }
      found_self = true;
    }
    ids.push_back(a.client);
  }
  if (!found_self) return Status::FailedPrecondition(who + ": not in the roster");
  if (!ca_pem_.empty()) {
    MLINK_ASSIGN_OR_RETURN(X509Ptr ca, ParseCertificate(ca_pem_));
    std::set<std::string> identities;
    for (const AdvertiseKeys& a : roster.clients) {
      const std::string entry = who + ": roster entry of client " + std::to_string(a.client);
      auto cert = ParseCertificate(a.certificate_pem);
      if (!cert.ok()) return Status::PermissionDenied(entry + " carries no certificate");
      auto identity = VerifyClientCertificate(cert->get(), ca.get());
      if (!identity.ok()) return identity.status().WithContext(entry);
      if (!identities.insert(*identity).second) {
        return Status::PermissionDenied(entry + ": identity '" + *identity + "' appears twice");
      }
      MLINK_RETURN_IF_ERROR(VerifyAdvertisement(a, cert->get()).WithContext(entry));
    }
  }
  MLINK_RETURN_IF_ERROR(ValidateParams(roster.params, roster.total_clients));
  const uint32_t n = roster.total_clients;
  const bool complete = roster.params.degree == 0 || roster.params.degree >= n - 1;
  const std::size_t degree = complete ? n - 1 : roster.params.degree;
  if (ids.size() != degree + 1) {
    return Status::InvalidArgument(who + ": roster has " + std::to_string(ids.size() - 1) +
                                   " neighbours, the degree is " + std::to_string(degree));
  }
  params_ = roster.params;
  std::vector<uint32_t> nb;
  for (const AdvertiseKeys& a : roster.clients) {
    if (a.client == self) continue;
    nb.push_back(a.client);
    neighbours_[a.client] = a;
  }
  MLINK_ASSIGN_OR_RETURN(std::vector<Bytes> b_shares, ShamirSplit(keys_->b, params_.threshold, nb));
  MLINK_ASSIGN_OR_RETURN(std::vector<Bytes> s_shares,
                         ShamirSplit(keys_->s_private, params_.threshold, nb));
  keys_->share_keys.clear();
  ShareKeys out;
  out.context = context_;
  out.client = self;
  for (std::size_t i = 0; i < nb.size(); ++i) {
    const uint32_t to = nb[i];
    auto key = EncryptionKey(keys_->c.get(), neighbours_.at(to).c_public, context_);
    if (!key.ok())
      return key.status().WithContext(who + ": client " + std::to_string(to) + "'s c key");
    keys_->share_keys[to] = *key;
    Bytes plain;
    plain.reserve(kSharePlainBytes);
    PutU32(&plain, self);
    PutU32(&plain, to);
    plain.insert(plain.end(), b_shares[i].begin(), b_shares[i].end());
    plain.insert(plain.end(), s_shares[i].begin(), s_shares[i].end());
    MLINK_ASSIGN_OR_RETURN(Bytes sealed, Seal(*key, ShareAad(context_, self, to), plain));
    out.shares.push_back({self, to, std::move(sealed)});
  }
  client_ = self;
  advertise_.client = self;
  phase_ = Phase::kShared;
  return out;
}

Result<MaskedInput> Client::Mask(const IncomingShares& incoming, const std::vector<float>& input) {
  const std::string who = "client " + std::to_string(client_) + ", " + Where(context_);
  if (phase_ != Phase::kShared) return Status::FailedPrecondition(who + ": not waiting for shares");
  if (incoming.context != context_) {
    return Status::PermissionDenied(who + ": shares are for " + Where(incoming.context));
  }
  if (incoming.client != client_)
    return Status::InvalidArgument(who + ": shares are for client " +
                                   std::to_string(incoming.client));
  if (input.size() != params_.length) {
    return Status::InvalidArgument(who + ": input has " + std::to_string(input.size()) +
                                   " values, the round " + std::to_string(params_.length));
  }
  MLINK_ASSIGN_OR_RETURN(std::vector<uint32_t> y, EncodeFixedPoint(input, params_));
  std::map<uint32_t, std::pair<Bytes, Bytes>> held;
  for (const EncryptedShare& e : incoming.shares) {
    const std::string from = "share from client " + std::to_string(e.from);
    auto nb = neighbours_.find(e.from);
    if (nb == neighbours_.end())
      return Status::PermissionDenied(who + ": " + from + ", not a neighbour");
    if (e.to != client_)
      return Status::InvalidArgument(who + ": " + from + " is addressed to client " +
                                     std::to_string(e.to));
    if (held.count(e.from))
      return Status::AlreadyExists(who + ": two shares from client " + std::to_string(e.from));
    auto plain =
        Open(keys_->share_keys.at(e.from), ShareAad(context_, e.from, client_), e.ciphertext);
    if (!plain.ok()) {
      return Status::PermissionDenied(
          who + ": " + from +
          " does not authenticate (tampered, wrong key, or from another round or link)");
    }
    const Bytes& p = *plain;
    if (p.size() != kSharePlainBytes || GetU32(p.data()) != e.from ||
        GetU32(p.data() + 4) != client_) {
      return Status::InvalidArgument(who + ": " + from + " is malformed");
    }
    Bytes b_share(p.begin() + 8, p.begin() + 8 + kShareBytes);
    Bytes s_share(p.begin() + 8 + kShareBytes, p.end());
    if (GetU32(b_share.data()) != client_ || GetU32(s_share.data()) != client_) {
      return Status::InvalidArgument(who + ": " + from + " is not evaluated at this client");
    }
    held.emplace(e.from, std::make_pair(std::move(b_share), std::move(s_share)));
  }
  if (held.size() < params_.threshold) {
    return Status::FailedPrecondition(who + ": only " + std::to_string(held.size()) +
                                      " neighbours shared keys, below the threshold " +
                                      std::to_string(params_.threshold));
  }
  MLINK_RETURN_IF_ERROR(AddPrg(keys_->b, false, &y));
  for (const auto& [j, unused] : held) {
    MLINK_ASSIGN_OR_RETURN(Bytes seed,
                           MaskSeed(keys_->s.get(), neighbours_.at(j).s_public, context_));
    MLINK_RETURN_IF_ERROR(AddPrg(seed, /*subtract=*/client_ > j, &y));
  }
  held_ = std::move(held);
  phase_ = Phase::kMasked;
  MaskedInput out;
  out.context = context_;
  out.client = client_;
  out.masked = std::move(y);
  return out;
}

Result<UnmaskResponse> Client::Unmask(const UnmaskRequest& request) {
  const std::string who = "client " + std::to_string(client_) + ", " + Where(context_);
  if (phase_ == Phase::kDone)
    return Status::FailedPrecondition(who + ": unmasking already answered");
  if (phase_ != Phase::kMasked) return Status::FailedPrecondition(who + ": no masked input sent");
  if (request.context != context_) {
    return Status::PermissionDenied(who + ": unmask request is for " + Where(request.context));
  }
  const std::vector<uint32_t>& survivors = request.survivors;
  if (!std::is_sorted(survivors.begin(), survivors.end()) ||
      std::adjacent_find(survivors.begin(), survivors.end()) != survivors.end()) {
    return Status::InvalidArgument(who + ": survivor list not sorted or repeats a client");
  }
  if (!Contains(survivors, client_))
    return Status::InvalidArgument(who + ": this client is not among the survivors");
  uint32_t surviving_neighbours = 0;
  for (const auto& [j, unused] : held_) surviving_neighbours += Contains(survivors, j) ? 1 : 0;
  if (surviving_neighbours < params_.threshold) {
    return Status::FailedPrecondition(who + ": only " + std::to_string(surviving_neighbours) +
                                      " neighbours survived, below the threshold " +
                                      std::to_string(params_.threshold) + "; revealing nothing");
  }
  UnmaskResponse out;
  out.context = context_;
  out.client = client_;
  for (const auto& [j, shares] : held_) {
    const bool survived = Contains(survivors, j);
    out.shares.push_back({j, !survived, survived ? shares.first : shares.second});
  }
  phase_ = Phase::kDone;
  held_.clear();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Server.

Server::Server(const Context& context, const Params& params, uint32_t min_clients)
    : context_(context), params_(params), min_clients_(min_clients) {}

Result<std::unique_ptr<Server>> Server::Create(const Context& context, const Params& params,
                                               uint32_t min_clients) {
  if (min_clients < params.threshold + 1) {
    return Status::InvalidArgument("secure aggregation: min_clients " +
                                   std::to_string(min_clients) + " must exceed the threshold " +
                                   std::to_string(params.threshold));
  }
  if (params.degree % 2 != 0 || (params.degree != 0 && params.threshold > params.degree)) {
    return Status::InvalidArgument("secure aggregation: degree " + std::to_string(params.degree) +
                                   " must be even and at least the threshold " +
                                   std::to_string(params.threshold));
  }
  Params complete = params;  // the smallest round allowed is a complete graph of min_clients
  complete.degree = 0;
  MLINK_RETURN_IF_ERROR(ValidateParams(complete, min_clients));
  return std::unique_ptr<Server>(new Server(context, params, min_clients));
}

Status Server::AddAdvertisement(const AdvertiseKeys& m) {
  const std::string who = Where(context_) + ": keys of client " + std::to_string(m.client);
  if (phase_ != Phase::kAdvertising)
    return Status::FailedPrecondition(who + ": advertising is closed");
  if (m.context != context_) return Status::PermissionDenied(who + " are for " + Where(m.context));
  if (m.client == 0) return Status::InvalidArgument(who + ": index 0 is reserved");
  if (roster_.count(m.client)) return Status::AlreadyExists(who + " already advertised");
  if (m.c_public.size() != kKeyBytes || m.s_public.size() != kKeyBytes ||
      m.c_public == m.s_public) {
    return Status::InvalidArgument(who +
                                   " are malformed (two distinct 32-byte X25519 keys expected)");
  }
  for (const auto& [id, a] : roster_) {
    if (a.c_public == m.c_public || a.s_public == m.s_public || a.c_public == m.s_public ||
        a.s_public == m.c_public) {
      return Status::InvalidArgument(who + " repeat keys of client " + std::to_string(id) +
                                     " (replayed)");
    }
  }
  if (!m.certificate_pem.empty() || !m.signature.empty()) {
    auto cert = ParseCertificate(m.certificate_pem);
    if (!cert.ok()) return Status::PermissionDenied(who + ": signed without a certificate");
    MLINK_RETURN_IF_ERROR(VerifyAdvertisement(m, cert->get()).WithContext(who));
  }
  // A low-order or malformed point fails an agreement with any key.
  MLINK_ASSIGN_OR_RETURN(KeyPair probe, GenerateX25519());
  for (const Bytes* k : {&m.c_public, &m.s_public}) {
    auto agreed = Agree(probe.key.get(), *k);
    if (!agreed.ok()) return agreed.status().WithContext(who);
  }
  roster_[m.client] = m;
  return Status::Ok();
}

Result<std::map<uint32_t, Roster>> Server::CloseAdvertising() {
  if (phase_ != Phase::kAdvertising)
    return Status::FailedPrecondition(Where(context_) + ": advertising already closed");
  const auto n = static_cast<uint32_t>(roster_.size());
  if (n < min_clients_) {
    return Status::FailedPrecondition(Where(context_) + ": " + std::to_string(n) +
                                      " clients advertised keys, " + std::to_string(min_clients_) +
                                      " needed");
  }
  MLINK_RETURN_IF_ERROR(ValidateParams(params_, n));
  std::vector<uint32_t> ids;
  for (const auto& [id, unused] : roster_) ids.push_back(id);
  graph_ = NeighbourGraph(ids, params_.degree, params_.graph_seed);
  std::map<uint32_t, Roster> out;
  for (const auto& [id, nb] : graph_) {
    Roster& r = out[id];
    r.context = context_;
    r.params = params_;
    r.total_clients = n;
    r.recipient = id;
    std::vector<uint32_t> members = nb;
    members.insert(std::upper_bound(members.begin(), members.end(), id), id);
    for (uint32_t m : members) r.clients.push_back(roster_.at(m));
  }
  phase_ = Phase::kSharing;
  return out;
}

Status Server::AddShareKeys(const ShareKeys& m) {
  const std::string who = Where(context_) + ": shares of client " + std::to_string(m.client);
  if (phase_ != Phase::kSharing) return Status::FailedPrecondition(who + ": sharing is not open");
  if (m.context != context_) return Status::PermissionDenied(who + " are for " + Where(m.context));
  auto nb = graph_.find(m.client);
  if (nb == graph_.end()) return Status::PermissionDenied(who + ": not in the roster");
  if (shared_.count(m.client)) return Status::AlreadyExists(who + " already received");
  if (m.shares.size() != nb->second.size()) {
    return Status::InvalidArgument(who + ": " + std::to_string(m.shares.size()) + " shares for " +
                                   std::to_string(nb->second.size()) + " neighbours");
  }
  std::set<uint32_t> to;
  for (const EncryptedShare& e : m.shares) {
    if (e.from != m.client || !Contains(nb->second, e.to) || !to.insert(e.to).second ||
        e.ciphertext.size() != kShareCipherBytes) {
      return Status::InvalidArgument(
          who + ": a share is not from the sender to a distinct neighbour, or malformed");
    }
  }
  shared_[m.client] = m;
  return Status::Ok();
}

Result<std::map<uint32_t, IncomingShares>> Server::CloseSharing() {
  if (phase_ != Phase::kSharing)
    return Status::FailedPrecondition(Where(context_) + ": sharing is not open");
  if (shared_.size() < min_clients_) {
    return Status::FailedPrecondition(Where(context_) + ": " + std::to_string(shared_.size()) +
                                      " clients shared keys, " + std::to_string(min_clients_) +
                                      " needed");
  }
  std::map<uint32_t, IncomingShares> out;
  for (const auto& [id, unused] : shared_) {
    IncomingShares& in = out[id];
    in.context = context_;
    in.client = id;
  }
  for (const auto& [from, m] : shared_) {
    for (const EncryptedShare& e : m.shares) {
      auto it = out.find(e.to);
      if (it != out.end()) it->second.shares.push_back(e);
    }
  }
  for (auto& [id, m] : shared_) m.shares.clear();  // routed; only U2 membership is needed now
  phase_ = Phase::kMasking;
  sum_.assign(params_.length, 0);
  return out;
}

Status Server::AddMaskedInput(const MaskedInput& m) {
  const std::string who = Where(context_) + ": input of client " + std::to_string(m.client);
  if (phase_ != Phase::kMasking) return Status::FailedPrecondition(who + ": masking is not open");
  if (m.context != context_) return Status::PermissionDenied(who + " is for " + Where(m.context));
  if (!shared_.count(m.client))
    return Status::PermissionDenied(who + ": the client did not share keys");
  if (masked_.count(m.client)) return Status::AlreadyExists(who + " already received");
  if (m.masked.size() != params_.length) {
    return Status::InvalidArgument(who + " has " + std::to_string(m.masked.size()) +
                                   " values, expected " + std::to_string(params_.length));
  }
  for (std::size_t i = 0; i < sum_.size(); ++i) sum_[i] += m.masked[i];
  masked_.insert(m.client);
  return Status::Ok();
}

Result<UnmaskRequest> Server::CloseMasking() {
  if (phase_ != Phase::kMasking)
    return Status::FailedPrecondition(Where(context_) + ": masking is not open");
  if (masked_.size() < min_clients_) {
    return Status::FailedPrecondition(Where(context_) + ": " + std::to_string(masked_.size()) +
                                      " masked inputs arrived, " + std::to_string(min_clients_) +
                                      " needed");
  }
  phase_ = Phase::kUnmasking;
  UnmaskRequest r;
  r.context = context_;
  r.survivors.assign(masked_.begin(), masked_.end());
  return r;
}

Status Server::AddUnmaskResponse(const UnmaskResponse& m) {
  const std::string who =
      Where(context_) + ": unmasking shares of client " + std::to_string(m.client);
  if (phase_ != Phase::kUnmasking)
    return Status::FailedPrecondition(who + ": unmasking is not open");
  if (m.context != context_) return Status::PermissionDenied(who + " are for " + Where(m.context));
  if (!masked_.count(m.client)) return Status::PermissionDenied(who + ": not a survivor");
  if (responses_.count(m.client)) return Status::AlreadyExists(who + " already received");
  const std::vector<uint32_t>& nb = graph_.at(m.client);
  std::set<uint32_t> owners;
  for (const RevealedShare& s : m.shares) {
    if (!Contains(nb, s.owner) || !shared_.count(s.owner) || !owners.insert(s.owner).second) {
      return Status::InvalidArgument(who + ": a share of client " + std::to_string(s.owner) +
                                     ", not a neighbour that shared keys, or repeated");
    }
    if (s.is_mask_key == (masked_.count(s.owner) > 0)) {
      return Status::InvalidArgument(
          who + ": the share of client " + std::to_string(s.owner) +
          " is of the wrong kind (b for survivors, s for dropped clients)");
    }
    if (s.share.size() != kShareBytes || GetU32(s.share.data()) != m.client) {
      return Status::InvalidArgument(who + ": the share of client " + std::to_string(s.owner) +
                                     " is malformed");
    }
  }
  responses_[m.client] = m;
  return Status::Ok();
}

Result<AggregateResult> Server::Finish() {
  if (phase_ != Phase::kUnmasking)
    return Status::FailedPrecondition(Where(context_) + ": unmasking is not open");
  // Shares per owner, from the survivors that answered.
  std::map<uint32_t, std::vector<Bytes>> b_shares, s_shares;
  for (const auto& [from, r] : responses_) {
    for (const RevealedShare& s : r.shares)
      (s.is_mask_key ? s_shares : b_shares)[s.owner].push_back(s.share);
  }
  AggregateResult result;
  std::vector<uint32_t> total = sum_;
  const std::string cannot = "cannot unmask " + Where(context_) + ": ";
  for (uint32_t j : masked_) {
    const auto& shares = b_shares[j];
    if (shares.size() < params_.threshold) {
      return Status::FailedPrecondition(cannot + "survivor " + std::to_string(j) +
                                        "'s self mask has " + std::to_string(shares.size()) +
                                        " shares from surviving neighbours, " +
                                        std::to_string(params_.threshold) + " needed");
    }
    auto b = ShamirCombine(shares, params_.threshold);
    if (!b.ok()) return b.status().WithContext(cannot + "self mask of client " + std::to_string(j));
    MLINK_RETURN_IF_ERROR(AddPrg(*b, /*subtract=*/true, &total));
    result.survivors.push_back(j);
  }
  for (const auto& [j, unused] : shared_) {
    if (masked_.count(j)) continue;
    const auto& shares = s_shares[j];
    if (shares.size() < params_.threshold) {
      return Status::FailedPrecondition(cannot + "dropped client " + std::to_string(j) +
                                        "'s mask key has " + std::to_string(shares.size()) +
                                        " shares from surviving neighbours, " +
                                        std::to_string(params_.threshold) + " needed");
    }
    auto raw = ShamirCombine(shares, params_.threshold);
    if (!raw.ok())
      return raw.status().WithContext(cannot + "mask key of client " + std::to_string(j));
    MLINK_ASSIGN_OR_RETURN(PkeyPtr s_key, PrivateFromRaw(*raw));
    MLINK_ASSIGN_OR_RETURN(Bytes pub, PublicOf(s_key.get()));
    if (pub != roster_.at(j).s_public) {
      return Status::DataLoss(cannot + "the rebuilt mask key of client " + std::to_string(j) +
                              " does not match its advertised key");
    }
    // Survivor k added +PRG(s_kj) if k < j and -PRG(s_kj) otherwise; undo it.
    for (uint32_t k : graph_.at(j)) {
      if (!masked_.count(k)) continue;
      MLINK_ASSIGN_OR_RETURN(Bytes seed, MaskSeed(s_key.get(), roster_.at(k).s_public, context_));
      MLINK_RETURN_IF_ERROR(AddPrg(seed, /*subtract=*/k < j, &total));
    }
    result.dropped.push_back(j);
  }
  result.sum = DecodeFixedPoint(total, params_);
  phase_ = Phase::kDone;
  responses_.clear();
  return result;
}

// ---------------------------------------------------------------------------------------------
// Payload encoding.

namespace {

enum class Kind : uint8_t {
  kAdvertiseKeys = 1,
  kRoster = 2,
  kShareKeys = 3,
  kIncomingShares = 4,
  kMaskedInput = 5,
  kUnmaskRequest = 6,
  kUnmaskResponse = 7,
};

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U32(uint32_t v) { PutU32(&out_, v); }
  void U64(uint64_t v) { PutU64(&out_, v); }
  void F64(double v) {
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    U64(bits);
  }
  void Blob(const uint8_t* data, std::size_t n) {
    U64(n);
    out_.insert(out_.end(), data, data + n);
  }
  void Blob(const Bytes& b) { Blob(b.data(), b.size()); }
  void Str(const std::string& s) { Blob(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }
  void Context(const secagg::Context& c) {
    Str(c.link_id);
    U64(c.round);
  }
  Bytes Take() { return std::move(out_); }

 private:
  Bytes out_;
};

class Reader {
 public:
  Reader(const uint8_t* data, std::size_t size, const PayloadLimits& limits)
      : p_(data), left_(size), limits_(limits) {}
  const PayloadLimits& limits() const { return limits_; }
  std::size_t left() const { return left_; }

  Status U8(const char* field, uint8_t* v) {
    MLINK_RETURN_IF_ERROR(Need(field, 1));
    *v = *p_;
    Skip(1);
    return Status::Ok();
  }
  Status U32(const char* field, uint32_t* v) {
    MLINK_RETURN_IF_ERROR(Need(field, 4));
    *v = GetU32(p_);
    Skip(4);
    return Status::Ok();
  }
  Status U64(const char* field, uint64_t* v) {
    MLINK_RETURN_IF_ERROR(Need(field, 8));
    *v = GetU64(p_);
    Skip(8);
    return Status::Ok();
  }
  Status F64(const char* field, double* v) {
    uint64_t bits = 0;
    MLINK_RETURN_IF_ERROR(U64(field, &bits));
    std::memcpy(v, &bits, sizeof bits);
    return Status::Ok();
  }
  // A count of entries of at least `min_entry` bytes each.
  Status Count(const char* field, std::size_t limit, std::size_t min_entry, std::size_t* n) {
    uint64_t raw = 0;
    MLINK_RETURN_IF_ERROR(U64(field, &raw));
    if (raw > limit) {
      return Status::OutOfRange(std::string(field) + " has " + std::to_string(raw) + ", limit " +
                                std::to_string(limit));
    }
    if (raw > left_ / min_entry) {
      return Status::InvalidArgument(std::string("truncated payload: ") + field + " claims " +
                                     std::to_string(raw) + " but only " + std::to_string(left_) +
                                     " bytes are left");
    }
    *n = static_cast<std::size_t>(raw);
    return Status::Ok();
  }
  Status Blob(const char* field, std::size_t limit, Bytes* out) {
    std::size_t n = 0;
    MLINK_RETURN_IF_ERROR(Count(field, limit, 1, &n));
    out->assign(p_, p_ + n);
    Skip(n);
    return Status::Ok();
  }
  Status Str(const char* field, std::size_t limit, std::string* out) {
    std::size_t n = 0;
    MLINK_RETURN_IF_ERROR(Count(field, limit, 1, &n));
    out->assign(reinterpret_cast<const char*>(p_), n);
    Skip(n);
    return Status::Ok();
  }
  Status Context(secagg::Context* c) {
    MLINK_RETURN_IF_ERROR(Str("link_id", limits_.max_string, &c->link_id));
    return U64("round", &c->round);
  }

 private:
  Status Need(const char* field, std::size_t n) const {
    if (left_ >= n) return Status::Ok();
    return Status::InvalidArgument(std::string("truncated payload at ") + field);
  }
  void Skip(std::size_t n) {
    p_ += n;
    left_ -= n;
  }
  const uint8_t* p_;
  std::size_t left_;
  const PayloadLimits& limits_;
};

// An advertisement's fields after the context (also a roster entry).
void WriteKeys(Writer& w, const AdvertiseKeys& a) {
  w.U32(a.client);
  w.Blob(a.c_public);
  w.Blob(a.s_public);
  w.Str(a.certificate_pem);
  w.Blob(a.signature);
}
Status ReadKeys(Reader& r, AdvertiseKeys* a) {
  const std::size_t blob = r.limits().max_blob;
  MLINK_RETURN_IF_ERROR(r.U32("client", &a->client));
  MLINK_RETURN_IF_ERROR(r.Blob("c_public", blob, &a->c_public));
  MLINK_RETURN_IF_ERROR(r.Blob("s_public", blob, &a->s_public));
  MLINK_RETURN_IF_ERROR(r.Str("certificate_pem", blob, &a->certificate_pem));
  return r.Blob("signature", blob, &a->signature);
}
constexpr std::size_t kMinKeysBytes = 4 + 4 * 8;

void WriteShares(Writer& w, uint32_t client, const std::vector<EncryptedShare>& shares) {
  w.U32(client);
  w.U64(shares.size());
  for (const EncryptedShare& e : shares) {
    w.U32(e.from);
    w.U32(e.to);
    w.Blob(e.ciphertext);
  }
}
Status ReadShares(Reader& r, uint32_t* client, std::vector<EncryptedShare>* shares) {
  MLINK_RETURN_IF_ERROR(r.U32("client", client));
  std::size_t n = 0;
  MLINK_RETURN_IF_ERROR(r.Count("shares", r.limits().max_entries, 4 + 4 + 8, &n));
  shares->resize(n);
  for (EncryptedShare& e : *shares) {
    MLINK_RETURN_IF_ERROR(r.U32("from", &e.from));
    MLINK_RETURN_IF_ERROR(r.U32("to", &e.to));
    MLINK_RETURN_IF_ERROR(r.Blob("ciphertext", r.limits().max_blob, &e.ciphertext));
  }
  return Status::Ok();
}

void WriteWords(Writer& w, const std::vector<uint32_t>& words) {
  w.U64(words.size());
  for (uint32_t v : words) w.U32(v);
}
Status ReadWords(Reader& r, const char* field, std::size_t limit, std::vector<uint32_t>* out) {
  std::size_t n = 0;
  MLINK_RETURN_IF_ERROR(r.Count(field, limit, 4, &n));
  out->resize(n);
  for (uint32_t& v : *out) MLINK_RETURN_IF_ERROR(r.U32(field, &v));
  return Status::Ok();
}

struct Save {
  Writer& w;
  void operator()(const AdvertiseKeys& m) {
    w.U8(static_cast<uint8_t>(Kind::kAdvertiseKeys));
    w.Context(m.context);
    WriteKeys(w, m);
  }
  void operator()(const Roster& m) {
    w.U8(static_cast<uint8_t>(Kind::kRoster));
    w.Context(m.context);
    const Params& p = m.params;
    w.U32(p.threshold);
    w.U32(p.degree);
    w.U64(p.graph_seed);
    w.U32(p.frac_bits);
    w.F64(p.clip);
    w.U32(p.length);
    w.U32(m.total_clients);
    w.U32(m.recipient);
    w.U64(m.clients.size());
    for (const AdvertiseKeys& a : m.clients) WriteKeys(w, a);  // each in the roster's context
  }
  void operator()(const ShareKeys& m) {
    w.U8(static_cast<uint8_t>(Kind::kShareKeys));
    w.Context(m.context);
    WriteShares(w, m.client, m.shares);
  }
  void operator()(const IncomingShares& m) {
    w.U8(static_cast<uint8_t>(Kind::kIncomingShares));
    w.Context(m.context);
    WriteShares(w, m.client, m.shares);
  }
  void operator()(const MaskedInput& m) {
    w.U8(static_cast<uint8_t>(Kind::kMaskedInput));
    w.Context(m.context);
    w.U32(m.client);
    WriteWords(w, m.masked);
  }
  void operator()(const UnmaskRequest& m) {
    w.U8(static_cast<uint8_t>(Kind::kUnmaskRequest));
    w.Context(m.context);
    WriteWords(w, m.survivors);
  }
  void operator()(const UnmaskResponse& m) {
    w.U8(static_cast<uint8_t>(Kind::kUnmaskResponse));
    w.Context(m.context);
    w.U32(m.client);
    w.U64(m.shares.size());
    for (const RevealedShare& s : m.shares) {
      w.U32(s.owner);
      w.U8(s.is_mask_key ? 1 : 0);
      w.Blob(s.share);
    }
  }
};

Result<Message> ParseBody(Kind kind, const secagg::Context& context, Reader& r) {
  const PayloadLimits& l = r.limits();
  switch (kind) {
    case Kind::kAdvertiseKeys: {
      AdvertiseKeys m;
      m.context = context;
      MLINK_RETURN_IF_ERROR(ReadKeys(r, &m));
      return Message(std::move(m));
    }
    case Kind::kRoster: {
      Roster m;
      m.context = context;
      Params& p = m.params;
      MLINK_RETURN_IF_ERROR(r.U32("threshold", &p.threshold));
      MLINK_RETURN_IF_ERROR(r.U32("degree", &p.degree));
      MLINK_RETURN_IF_ERROR(r.U64("graph_seed", &p.graph_seed));
      MLINK_RETURN_IF_ERROR(r.U32("frac_bits", &p.frac_bits));
      MLINK_RETURN_IF_ERROR(r.F64("clip", &p.clip));
      MLINK_RETURN_IF_ERROR(r.U32("length", &p.length));
      MLINK_RETURN_IF_ERROR(r.U32("total_clients", &m.total_clients));
      MLINK_RETURN_IF_ERROR(r.U32("recipient", &m.recipient));
      std::size_t n = 0;
      MLINK_RETURN_IF_ERROR(r.Count("clients", l.max_entries, kMinKeysBytes, &n));
      m.clients.resize(n);
      for (AdvertiseKeys& a : m.clients) {
        a.context = context;
        MLINK_RETURN_IF_ERROR(ReadKeys(r, &a));
      }
      return Message(std::move(m));
    }
    case Kind::kShareKeys: {
      ShareKeys m;
      m.context = context;
      MLINK_RETURN_IF_ERROR(ReadShares(r, &m.client, &m.shares));
      return Message(std::move(m));
    }
    case Kind::kIncomingShares: {
      IncomingShares m;
      m.context = context;
      MLINK_RETURN_IF_ERROR(ReadShares(r, &m.client, &m.shares));
      return Message(std::move(m));
    }
    case Kind::kMaskedInput: {
      MaskedInput m;
      m.context = context;
      MLINK_RETURN_IF_ERROR(r.U32("client", &m.client));
      MLINK_RETURN_IF_ERROR(ReadWords(r, "masked", l.max_words, &m.masked));
      return Message(std::move(m));
    }
    case Kind::kUnmaskRequest: {
      UnmaskRequest m;
      m.context = context;
      MLINK_RETURN_IF_ERROR(ReadWords(r, "survivors", l.max_entries, &m.survivors));
      return Message(std::move(m));
    }
    case Kind::kUnmaskResponse: {
      UnmaskResponse m;
      m.context = context;
      MLINK_RETURN_IF_ERROR(r.U32("client", &m.client));
      std::size_t n = 0;
      MLINK_RETURN_IF_ERROR(r.Count("shares", l.max_entries, 4 + 1 + 8, &n));
      m.shares.resize(n);
      for (RevealedShare& s : m.shares) {
        uint8_t flag = 0;
        MLINK_RETURN_IF_ERROR(r.U32("owner", &s.owner));
        MLINK_RETURN_IF_ERROR(r.U8("is_mask_key", &flag));
        if (flag > 1)
          return Status::InvalidArgument("is_mask_key is " + std::to_string(flag) + ", not 0 or 1");
        s.is_mask_key = flag == 1;
        MLINK_RETURN_IF_ERROR(r.Blob("share", l.max_blob, &s.share));
      }
      return Message(std::move(m));
    }
  }
  return Status::InvalidArgument("unknown secure-aggregation message kind " +
                                 std::to_string(static_cast<int>(kind)));
}

}  // namespace

Bytes Serialize(const Message& message) {
  Writer w;
  std::visit(Save{w}, message);
  return w.Take();
}

Result<Message> Parse(const uint8_t* data, std::size_t size, const PayloadLimits& limits) {
  Reader r(data, size, limits);
  uint8_t kind = 0;
  MLINK_RETURN_IF_ERROR(r.U8("kind", &kind));
  if (kind < static_cast<uint8_t>(Kind::kAdvertiseKeys) ||
      kind > static_cast<uint8_t>(Kind::kUnmaskResponse)) {
    return Status::InvalidArgument("unknown secure-aggregation message kind " +
                                   std::to_string(kind));
  }
  secagg::Context context;
  MLINK_RETURN_IF_ERROR(r.Context(&context));
  MLINK_ASSIGN_OR_RETURN(Message m, ParseBody(static_cast<Kind>(kind), context, r));
  if (r.left() != 0) {
    return Status::InvalidArgument(std::to_string(r.left()) +
                                   " trailing bytes after the last field");
  }
  return m;
}

std::size_t WireBytes(const Message& message) {
  const std::size_t link_bytes =
      std::visit([](const auto& m) { return m.context.link_id.size(); }, message);
  return kEnvelopeBytes + link_bytes + Serialize(message).size();
}

}  // namespace mlink::protocol::secagg
