// Test support for a site's learner against an in-process aggregator: the oracle link "m->oracle"
// of a 4-class model "m", the aggregator's options for it and the site's learning options.
#pragma once

#include <cstdint>
#include <string>

#include "cloud_support.h"
#include "mlink/cloud/options.h"
#include "mlink/edge/learner.h"
#include "mlink/protocol/transport.h"

namespace mlink::testing {

// The oracle link of model "m": vec2vec 4 -> 4, single label.
inline link::LinkSpec OracleSpec() { return VectorSpec(4, 4); }

// An aggregator with link "m->oracle" (seed 3, deadline 60 s) closing rounds at `min_edges`.
inline cloud::CloudOptions OracleCloud(const std::string& certs, const std::string& data_dir,
                                       int min_edges) {
  cloud::CloudOptions o = CloudOptionsFor(certs, data_dir);
  o.links.push_back(LinkFor("m->oracle", OracleSpec(), 3, min_edges, min_edges, 60));
  return o;
}

// Site `site` learns the oracle link of model "m" (4 classes, retraining every 20 labels) and,
// unless `port` is 0, federates it with the aggregator on 127.0.0.1:`port` in quick rounds.
inline edge::LearningOptions OracleLearning(const std::string& certs, const std::string& site,
                                            uint16_t port) {
  edge::LearningOptions o;
  o.sampling.policy = "none";
  o.retrain_samples = 0;
  o.oracle_enabled = true;
  o.oracle.model = "m";
  o.oracle.classes = 4;
  o.oracle.dim = 4;
  o.oracle.min_labels = 20;
  o.oracle.retrain_labels = 20;
  auto& f = o.federation;
  f.enabled = port != 0;
  f.endpoint.host = "127.0.0.1";
  f.endpoint.port = port;
  f.endpoint.path = protocol::kFederationPath;
  f.ca_file = certs + "/ca.pem";
  f.cert_file = certs + "/" + site + ".pem";
  f.key_file = certs + "/" + site + ".key";
  f.site = site;
  f.links.push_back({"m->oracle", "m", "oracle", OracleSpec(), true, false, {}});
  f.local_epochs = 3;
  f.min_samples = 20;
  f.backoff_initial_s = 0.05;
  f.backoff_max_s = 0.5;
  f.round_interval_s = 0.2;
  return o;
}

}  // namespace mlink::testing
