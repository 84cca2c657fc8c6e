// Test support: many edge certificates at once, signed by the CA that scripts/gen-certs made
// (the CLI takes about 0.1 s per certificate; this takes about a millisecond). Each edge gets
// NAME.pem and NAME.key with subject CN = NAME and extendedKeyUsage clientAuth, as gen-certs
// issues them.
#pragma once

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <string>

namespace mlink::testing {

inline bool IssueEdgeCerts(const std::string& dir, const std::string& prefix, int count) {
  FILE* f = std::fopen((dir + "/ca.pem").c_str(), "r");
  if (!f) return false;
  X509* ca = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  f = std::fopen((dir + "/ca.key").c_str(), "r");
  if (!f) return false;
  EVP_PKEY* ca_key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  bool ok = ca && ca_key;
  // One key for all edges: identity is the certificate's CN, and key generation is the slow part.
  EVP_PKEY* key = ok ? EVP_EC_gen("P-256") : nullptr;
  ok = ok && key;
  for (int i = 0; ok && i < count; ++i) {
    const std::string name = prefix + std::to_string(i);
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1000 + i);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_set_pubkey(x, key);
    X509_NAME* subject = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca, x, nullptr, nullptr, 0);
    for (const auto& [nid, value] : {std::pair<int, const char*>{NID_basic_constraints, "CA:FALSE"},
                                     {NID_key_usage, "critical,digitalSignature"},
                                     {NID_ext_key_usage, "clientAuth"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
      ok = ok && ext && X509_add_ext(x, ext, -1) == 1;
      X509_EXTENSION_free(ext);
    }
    ok = ok && X509_sign(x, ca_key, EVP_sha256()) > 0;
    FILE* pem = ok ? std::fopen((dir + "/" + name + ".pem").c_str(), "w") : nullptr;
    ok = ok && pem && PEM_write_X509(pem, x) == 1;
    if (pem) std::fclose(pem);
    FILE* k = ok ? std::fopen((dir + "/" + name + ".key").c_str(), "w") : nullptr;
    ok = ok && k && PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
    if (k) std::fclose(k);
    X509_free(x);
  }
  EVP_PKEY_free(key);
  EVP_PKEY_free(ca_key);
  X509_free(ca);
  return ok;
}

}  // namespace mlink::testing
