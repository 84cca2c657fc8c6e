// A remote black-box model served over the KServe v2 / Open Inference Protocol REST API.
//
//   GET  {url}/v2/models/{model}/ready   -> HTTP 200 when the model can serve
//   POST {url}/v2/models/{model}/infer   with
//        {"inputs": [{"name": input_name, "shape": [1, H, W, C], "datatype": "FP32",
//                     "data": [... row-major NHWC floats ...]}]}
//     -> {"outputs": [{"name": ..., "shape": [...], "datatype": "FP32", "data": [...]}, ...]}
//
// Each frame is resized to width x height (bilinear), optionally turned to one grey channel,
// converted to float and multiplied by `scale`. Colour frames keep OpenCV's BGR order unless
// `swap_rb` is set (the same convention as cv::dnn::blobFromImage). The chosen output is
// flattened row-major and must hold exactly `output_dim` numbers (any numeric or BOOL datatype;
// BYTES is refused). The vector is returned as the server sent it: no softmax or other
// normalisation is applied here.
//
// Transport: plain HTTP/1.1 over TCP (https:// is refused: put a TLS-terminating proxy on
// loopback). One keep-alive connection per model, reused across calls; if a reused connection
// turns out to have been closed by the server, the request is retried once on a fresh one within
// the same deadline. Every request (connect, send, receive) must finish within `timeout_s`.
#pragma once

#include <memory>
#include <string>

#include "mlink/common/status.h"
#include "mlink/edge/model.h"
#include "mlink/link/spec.h"

namespace mlink::edge {

struct KServeOptions {
  // Server base URL, "http://host[:port][/prefix]" (port defaults to 80; a trailing '/' is
  // ignored). IPv6 literals go in brackets: "http://[::1]:8080".
  std::string url;
  // Model name on the server: one path segment, printable ASCII without '/', '?', '#', '%' or
  // spaces.
  std::string model;
  std::string input_name = "input";  // the tensor name sent in "inputs"
  std::string output_name;           // the output to read; empty = the first output
  int width = 64, height = 64;       // input size in pixels, each in [1, 8192]
  bool grayscale = true;             // one grey channel (C = 1) instead of three (C = 3)
  bool swap_rb = false;              // send colour pixels as RGB instead of BGR
  double scale = 1.0 / 255;          // pixel value multiplier (finite)
  int output_dim = 0;                // required: the length of the output vector, > 0
  // ModelInfo::task; any task but kSequence (this adapter returns vectors, not tokens).
  link::TaskKind task = link::TaskKind::kCount;
  double timeout_s = 2.0;    // deadline of each HTTP request (connect + send + receive), > 0
  double declared_cost = 0;  // ModelInfo::declared_cost; 0 = measure, >= 0
  std::string name;          // ModelInfo::name; empty = `model`
};

// Validates `options` (an InvalidArgument naming the field) and checks that the model is ready
// with one GET .../ready. Not ready, unreachable, refused or timed out is Unavailable, e.g.
//   "KServe model 'x' at http://127.0.0.1:9/v2/models/x/ready: connection refused".
// Blocks for at most about timeout_s plus host name resolution (done once, here, with the
// system resolver; the address is reused by later calls and looked up again after a connect
// failure).
//
// The returned Model has info().kind == "kserve", format Vector(output_dim), and is
// thread-compatible (one thread runs it at a time; distinct models are independent). Its Run():
//   - InvalidArgument: an empty or unconvertible frame; or an output (a config mismatch with
//     the served model) that is missing by name, has datatype BYTES or does not hold exactly
//     output_dim numbers;
//   - DeadlineExceeded: no complete response within timeout_s;
//   - Unavailable: connect or transport failure, HTTP 408/429/502/503/504;
//   - NotFound: HTTP 404; InvalidArgument: other HTTP 4xx; Internal: HTTP 500 and other 5xx,
//     or a response that breaks the protocol (malformed JSON, an "error" field, no "outputs",
//     non-numeric data, a shape that disagrees with the data, values beyond float range).
// Every message names the model and the request URL. Run never throws.
Result<std::unique_ptr<Model>> CreateKServeModel(const KServeOptions& options);

}  // namespace mlink::edge
