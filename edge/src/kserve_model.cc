// KServe v2 REST adapter: OpenCV preprocessing, a small synchronous Beast HTTP/1.1 client with a
// per-request deadline, and a defensive parser of the inference response.
#include "mlink/edge/kserve_model.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace mlink::edge {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Json = nlohmann::json;
// Request JSON with single-precision numbers: the dump writes each pixel in its shortest float
// form (about half the bytes of double round-trip text) and the server reads the same FP32 value.
using FloatJson = nlohmann::basic_json<std::map, std::vector, std::string, bool, std::int64_t,
                                       std::uint64_t, float>;

constexpr int kMaxSide = 8192;
constexpr std::uint64_t kMaxResponseBytes = 64ull << 20;
constexpr int kMaxJsonDepth = 32;
constexpr std::size_t kExcerptChars = 200;

std::string FormatSeconds(double s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

// A printable, bounded excerpt of a peer's text for an error message.
std::string Excerpt(const std::string& text) {
  std::string out;
  for (char c : text.substr(0, kExcerptChars)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  }
  if (text.size() > kExcerptChars) out += "...";
  return out;
}

struct HttpUrl {
  std::string host;       // for the resolver (IPv6 without brackets)
  std::string port;       // decimal
  std::string authority;  // Host header: host[:port] as written
  std::string prefix;     // path before /v2, without a trailing '/'
  std::string base;       // http://authority/prefix, for messages
};

Result<HttpUrl> ParseHttpUrl(const std::string& url) {
  auto bad = [&url](const std::string& why) {
    return Status::InvalidArgument("url '" + url + "': " + why);
  };
  const std::string kHttp = "http://";
  if (url.rfind("https://", 0) == 0) {
    return bad(
        "https is not supported by the KServe adapter; use http:// (e.g. a TLS-terminating "
        "proxy on loopback)");
  }
  if (url.rfind(kHttp, 0) != 0) return bad("expected http://host[:port][/prefix]");
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '?' || c == '#') {
      return bad("expected http://host[:port][/prefix] without spaces, query or fragment");
    }
  }
  const std::string rest = url.substr(kHttp.size());
  const std::size_t slash = rest.find('/');
  HttpUrl out;
  out.authority = rest.substr(0, slash);
  out.prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  if (out.authority.find('@') != std::string::npos) return bad("user info is not supported");

  std::string port_text;
  if (!out.authority.empty() && out.authority.front() == '[') {
    const std::size_t close = out.authority.find(']');
    if (close == std::string::npos) return bad("unterminated '[' in the host");
    out.host = out.authority.substr(1, close - 1);
    const std::string after = out.authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("unexpected text after ']'");
      port_text = after.substr(1);
      if (port_text.empty()) return bad("empty port");
    }
  } else {
    const std::size_t colon = out.authority.find(':');
    if (colon != out.authority.rfind(':')) return bad("IPv6 hosts go in brackets, e.g. [::1]");
    out.host = out.authority.substr(0, colon);
    if (colon != std::string::npos) {
      port_text = out.authority.substr(colon + 1);
      if (port_text.empty()) return bad("empty port");
    }
  }
  if (out.host.empty()) return bad("missing host");
  if (port_text.empty()) {
    out.port = "80";
  } else {
    if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos) {
      return bad("port '" + port_text + "' is not a number in [1, 65535]");
    }
    const int port = std::stoi(port_text);
    if (port < 1 || port > 65535) return bad("port " + port_text + " is not in [1, 65535]");
    out.port = std::to_string(port);
  }
  out.base = kHttp + out.authority + out.prefix;
  return out;
}

Status ValidateOptions(const KServeOptions& o) {
  auto bad = [](const std::string& why) {
    return Status::InvalidArgument("KServe options: " + why);
  };
  if (o.url.empty()) return bad("url is required (http://host:port)");
  if (o.model.empty()) return bad("model is required (the model name on the server)");
  for (char c : o.model) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '/' || c == '?' || c == '#' || c == '%') {
      return bad("model '" + o.model +
                 "' must be one URL path segment (printable ASCII, no '/', "
                 "'?', '#', '%' or spaces)");
    }
  }
  if (o.input_name.empty()) return bad("input_name must not be empty");
  if (o.width < 1 || o.width > kMaxSide) {
    return bad("width " + std::to_string(o.width) + " is not in [1, " + std::to_string(kMaxSide) +
               "]");
  }
  if (o.height < 1 || o.height > kMaxSide) {
    return bad("height " + std::to_string(o.height) + " is not in [1, " + std::to_string(kMaxSide) +
               "]");
  }
  if (!std::isfinite(o.scale)) return bad("scale must be a finite number");
  if (o.output_dim <= 0) {
    return bad("output_dim must be > 0 (the length of the model's output vector), got " +
               std::to_string(o.output_dim));
  }
  if (o.task == link::TaskKind::kSequence) {
    return bad("task sequence needs token outputs; the KServe adapter returns vectors");
  }
  if (!(o.timeout_s > 0) || !std::isfinite(o.timeout_s)) {
    return bad("timeout_s must be > 0 seconds, got " + FormatSeconds(o.timeout_s));
  }
  if (!(o.declared_cost >= 0) || !std::isfinite(o.declared_cost)) {
    return bad("declared_cost must be >= 0, got " + FormatSeconds(o.declared_cost));
  }
  return Status::Ok();
}

// The result of one HTTP exchange: a transport failure (ec set, `stage` says where) or a
// complete response.
struct HttpOutcome {
  beast::error_code ec;
  const char* stage = "";
  int status = 0;
  std::string body;
};

// One keep-alive HTTP/1.1 connection driven synchronously: each operation is started
// asynchronously on a private io_context and run to completion, so beast::tcp_stream's timer
// enforces the deadline even when the peer accepts and never answers. Thread-compatible.
class HttpClient {
 public:
  HttpClient(HttpUrl url, std::chrono::steady_clock::duration timeout)
      : url_(std::move(url)), timeout_(timeout) {}

  ~HttpClient() { Close(); }

  const HttpUrl& url() const { return url_; }

  // Sends one request (`body` empty = none) to prefix + `target` and reads the response, all
  // before now + timeout. A request on a reused connection that the server had already closed
  // is retried once on a fresh connection (same deadline).
  HttpOutcome Exchange(http::verb verb, const std::string& target, const std::string& body) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    const bool reused = stream_.has_value();
    bool got_bytes = false;
    HttpOutcome out = Attempt(verb, target, body, deadline, &got_bytes);
    if (out.ec && reused && !got_bytes && IsStaleConnection(out.ec)) {
      out = Attempt(verb, target, body, deadline, &got_bytes);
    }
    return out;
  }

 private:
  static bool IsStaleConnection(const beast::error_code& ec) {
    return ec == http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::error::connection_aborted;
  }

  // Starts one async operation with a handler that records its error code, and runs the
  // io_context until it (and the stream's timer) completed.
  template <typename Start>
  beast::error_code RunOp(Start&& start) {
    beast::error_code result = asio::error::would_block;
    std::forward<Start>(start)([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  HttpOutcome Attempt(http::verb verb, const std::string& target, const std::string& body,
                      std::chrono::steady_clock::time_point deadline, bool* got_bytes) {
    HttpOutcome out;
    *got_bytes = false;
    if (!stream_) {
      out.ec = Connect(deadline, &out.stage);
      if (out.ec) return out;
    }
    http::request<http::string_body> req{verb, url_.prefix + target, 11};
    req.set(http::field::host, url_.authority);
    req.set(http::field::user_agent, "mlink-edge");
    req.set(http::field::accept, "application/json");
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.keep_alive(true);
    req.prepare_payload();

    stream_->expires_at(deadline);
    out.ec = RunOp([&](auto handler) { http::async_write(*stream_, req, std::move(handler)); });
    if (out.ec) {
      out.stage = "send";
      Close();
      return out;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxResponseBytes);
    stream_->expires_at(deadline);
    out.ec = RunOp(
        [&](auto handler) { http::async_read(*stream_, buffer_, parser, std::move(handler)); });
    *got_bytes = parser.got_some();
    if (out.ec) {
      out.stage = "receive";
      Close();
      return out;
    }
    http::response<http::string_body> res = parser.release();
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    if (!res.keep_alive()) Close();
    return out;
  }

  beast::error_code Connect(std::chrono::steady_clock::time_point deadline, const char** stage) {
    beast::error_code ec;
    if (endpoints_.empty()) {
      // Blocking system resolver (no deadline); an IP literal resolves without a lookup.
      tcp::resolver resolver(ioc_);
      endpoints_ = resolver.resolve(url_.host, url_.port, ec);
      if (ec) {
        *stage = "resolve";
        endpoints_ = {};
        return ec;
      }
    }
    stream_.emplace(ioc_);
    stream_->expires_at(deadline);
    ec = RunOp([&](auto handler) { stream_->async_connect(endpoints_, std::move(handler)); });
    if (ec) {
      *stage = "connect";
      endpoints_ = {};  // look the host up again next time: it may have moved
      Close();
      return ec;
    }
    beast::error_code ignored;
    stream_->socket().set_option(tcp::no_delay(true), ignored);
    return ec;
  }

  void Close() {
    if (!stream_) return;
    beast::error_code ignored;
    stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_->socket().close(ignored);
    stream_.reset();
    buffer_.clear();
  }

  const HttpUrl url_;
  const std::chrono::steady_clock::duration timeout_;
  asio::io_context ioc_{1};                  // declared before the stream that uses it
  tcp::resolver::results_type endpoints_;    // cached resolution; empty = resolve on connect
  std::optional<beast::tcp_stream> stream_;  // open connection, if any
  beast::flat_buffer buffer_;                // bytes read past the last response
};

std::string DescribeTransportError(const HttpOutcome& o, double timeout_s) {
  const beast::error_code& ec = o.ec;
  if (ec == beast::error::timeout) return "timed out after " + FormatSeconds(timeout_s) + " s";
  if (ec == asio::error::connection_refused) return "connection refused";
  if (ec == http::error::end_of_stream || ec == asio::error::eof) {
    return "connection closed by the server";
  }
  if (ec == asio::error::connection_reset) return "connection reset by the server";
  if (ec == http::error::body_limit) {
    return "response body larger than " + std::to_string(kMaxResponseBytes >> 20) + " MiB";
  }
  return std::string(o.stage) + ": " + ec.message();
}

// The "error" text of a KServe error body, or an excerpt of the body.
std::string ErrorDetail(const std::string& body) {
  const Json doc = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_object()) {
    auto it = doc.find("error");
    if (it != doc.end() && it->is_string()) return Excerpt(it->get<std::string>());
  }
  return Excerpt(body);
}

Status StatusForHttp(int code, const std::string& msg) {
  if (code == 404) return Status::NotFound(msg);
  if (code == 408 || code == 429 || code == 502 || code == 503 || code == 504) {
    return Status::Unavailable(msg);
  }
  if (code >= 400 && code < 500) return Status::InvalidArgument(msg);
  return Status::Internal(msg);
}

// Appends the numbers of a (possibly nested) JSON array; false on a non-numeric element.
bool Flatten(const Json& data, int depth, std::vector<double>* out) {
  if (depth > kMaxJsonDepth) return false;
  for (const Json& v : data) {
    if (v.is_number()) {
      out->push_back(v.get<double>());
    } else if (v.is_boolean()) {
      out->push_back(v.get<bool>() ? 1.0 : 0.0);
    } else if (v.is_array()) {
      if (!Flatten(v, depth + 1, out)) return false;
    } else {
      return false;
    }
  }
  return true;
}

class KServeModel final : public Model {
 public:
  KServeModel(const KServeOptions& options, HttpUrl url)
      : options_(options),
        client_(std::move(url), std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                    std::chrono::duration<double>(options.timeout_s))),
        ready_target_("/v2/models/" + options.model + "/ready"),
        infer_target_("/v2/models/" + options.model + "/infer") {
    info_.name = options.name.empty() ? options.model : options.name;
    info_.kind = "kserve";
    info_.format = link::OutputFormat::Vector(options.output_dim);
    info_.task = options.task;
    info_.declared_cost = options.declared_cost;
  }

  const ModelInfo& info() const override { return info_; }

  Status CheckReady() {
    const HttpOutcome o = client_.Exchange(http::verb::get, ready_target_, "");
    if (o.ec)
      return Status::Unavailable(Where(ready_target_) +
                                 DescribeTransportError(o, options_.timeout_s));
    if (o.status != 200) {
      return Status::Unavailable(Where(ready_target_) + "not ready (HTTP " +
                                 std::to_string(o.status) +
                                 (o.body.empty() ? "" : ": " + ErrorDetail(o.body)) + ")");
    }
    return Status::Ok();
  }

  Result<ModelOutput> Run(const Frame& frame) override {
    try {
      return RunOrThrow(frame);
    } catch (const std::exception& e) {  // e.g. bad_alloc; never let it reach the caller
      return Status::Internal(Where(infer_target_) + "unexpected failure: " + e.what());
    }
  }

 private:
  // "KServe model 'x' at http://host:port/v2/models/x/infer: " (prefixed by the local name when
  // it differs from the served one).
  std::string Where(const std::string& target) const {
    std::string s =
        "KServe model '" + options_.model + "' at " + client_.url().base + target + ": ";
    if (info_.name != options_.model) s = "model '" + info_.name + "': " + s;
    return s;
  }

  Result<ModelOutput> RunOrThrow(const Frame& frame) {
    if (frame.image.empty()) return Status::InvalidArgument(Where(infer_target_) + "empty frame");
    int channels = 0;
    std::vector<float> pixels;
    try {
      cv::Mat img = Preprocess(frame.image, &channels);
      pixels.assign(img.ptr<float>(), img.ptr<float>() + img.total() * img.channels());
    } catch (const cv::Exception& e) {
      return Status::InvalidArgument(
          Where(infer_target_) + "preprocessing a " + std::to_string(frame.image.cols) + "x" +
          std::to_string(frame.image.rows) + " frame with " +
          std::to_string(frame.image.channels()) + " channels failed: " + e.what());
    }

    FloatJson input = FloatJson::object();
    input["name"] = options_.input_name;
    input["shape"] = {1, options_.height, options_.width, channels};
    input["datatype"] = "FP32";
    input["data"] = std::move(pixels);
    FloatJson request = FloatJson::object();
    request["inputs"] = FloatJson::array({std::move(input)});
    const std::string body = request.dump(-1, ' ', false, FloatJson::error_handler_t::replace);

    const HttpOutcome o = client_.Exchange(http::verb::post, infer_target_, body);
    if (o.ec) {
      const std::string msg = Where(infer_target_) + DescribeTransportError(o, options_.timeout_s);
      if (o.ec == beast::error::timeout) return Status::DeadlineExceeded(msg);
      return Status::Unavailable(msg);
    }
    if (o.status != 200) {
      return StatusForHttp(o.status, Where(infer_target_) + "HTTP " + std::to_string(o.status) +
                                         (o.body.empty() ? "" : ": " + ErrorDetail(o.body)));
    }
    MLINK_ASSIGN_OR_RETURN(std::vector<float> vec, ParseResponse(o.body));
    return ModelOutput{std::move(vec), {}};
  }

  // Frame -> width x height x C floats (C = 1 or 3), continuous, scaled. Throws cv::Exception.
  cv::Mat Preprocess(const cv::Mat& image, int* channels) const {
    cv::Mat img = image;
    const cv::Size size(options_.width, options_.height);
    if (img.size() != size) {
      cv::Mat resized;
      cv::resize(img, resized, size, 0, 0, cv::INTER_LINEAR);
      img = resized;
    }
    const int in = img.channels();
    cv::Mat converted;
    if (options_.grayscale) {
      if (in == 3) cv::cvtColor(img, converted, cv::COLOR_BGR2GRAY);
      if (in == 4) cv::cvtColor(img, converted, cv::COLOR_BGRA2GRAY);
    } else if (in == 1) {
      cv::cvtColor(img, converted, cv::COLOR_GRAY2BGR);
    } else if (in == 3 && options_.swap_rb) {
      cv::cvtColor(img, converted, cv::COLOR_BGR2RGB);
    } else if (in == 4) {
      cv::cvtColor(img, converted, options_.swap_rb ? cv::COLOR_BGRA2RGB : cv::COLOR_BGRA2BGR);
    }
    if (!converted.empty()) img = converted;
    *channels = options_.grayscale ? 1 : 3;
    if (img.channels() != *channels) {
      CV_Error(cv::Error::StsBadArg, "expected 1, 3 or 4 channels");
    }
    cv::Mat out;
    img.convertTo(out, CV_32F, options_.scale);
    if (!out.isContinuous()) out = out.clone();
    return out;
  }

  // Picks the configured output of a v2 inference response and checks its length.
  Result<std::vector<float>> ParseResponse(const std::string& body) const {
    const std::string where = Where(infer_target_);
    const Json doc = Json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded())
      return Status::Internal(where + "malformed JSON response: " + Excerpt(body));
    if (!doc.is_object())
      return Status::Internal(where + "response is not a JSON object: " + Excerpt(body));
    if (auto err = doc.find("error"); err != doc.end() && err->is_string()) {
      return Status::Internal(where + "server error: " + Excerpt(err->get<std::string>()));
    }
    auto outputs = doc.find("outputs");
    if (outputs == doc.end() || !outputs->is_array() || outputs->empty()) {
      return Status::Internal(where + "response has no \"outputs\" array: " + Excerpt(body));
    }

    const Json* chosen = nullptr;
    std::string names;
    for (std::size_t i = 0; i < outputs->size(); ++i) {
      const Json& out = (*outputs)[i];
      if (!out.is_object()) {
        return Status::Internal(where + "outputs[" + std::to_string(i) + "] is not an object");
      }
      auto name = out.find("name");
      const std::string n = name != out.end() && name->is_string() ? name->get<std::string>() : "";
      names += (names.empty() ? "" : ", ") + ("'" + n + "'");
      if (chosen == nullptr && (options_.output_name.empty() || n == options_.output_name)) {
        chosen = &out;
      }
    }
    if (chosen == nullptr) {
      return Status::InvalidArgument(where + "no output named '" + options_.output_name +
                                     "' (outputs: " + Excerpt(names) + ")");
    }
    auto name_it = chosen->find("name");
    const std::string label =
        "output '" +
        (name_it != chosen->end() && name_it->is_string() ? name_it->get<std::string>() : "") + "'";

    if (auto dt = chosen->find("datatype");
        dt != chosen->end() && dt->is_string() && dt->get<std::string>() == "BYTES") {
      return Status::InvalidArgument(where + label +
                                     " has datatype BYTES; expected a numeric tensor");
    }
    auto data = chosen->find("data");
    if (data == chosen->end() || !data->is_array()) {
      return Status::Internal(where + label + " has no \"data\" array");
    }
    std::vector<double> values;
    if (!Flatten(*data, 0, &values)) {
      return Status::Internal(where + label + " has non-numeric data: " + Excerpt(data->dump()));
    }
    if (auto shape = chosen->find("shape"); shape != chosen->end()) {
      double expected = 1;
      bool valid = shape->is_array();
      if (valid) {
        for (const Json& d : *shape) {
          valid = valid && d.is_number_integer() && d.get<std::int64_t>() >= 0;
          if (valid) expected *= static_cast<double>(d.get<std::int64_t>());
        }
      }
      if (!valid)
        return Status::Internal(where + label + " has an invalid shape " + Excerpt(shape->dump()));
      if (expected != static_cast<double>(values.size())) {
        return Status::Internal(where + label + ": shape " + Excerpt(shape->dump()) + " holds " +
                                FormatSeconds(expected) + " values but data has " +
                                std::to_string(values.size()));
      }
    }
    if (values.size() != static_cast<std::size_t>(options_.output_dim)) {
      return Status::InvalidArgument(
          where + label + " has " + std::to_string(values.size()) +
          " values; expected output_dim = " + std::to_string(options_.output_dim));
    }
    std::vector<float> vec(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      vec[i] = static_cast<float>(values[i]);
      if (!std::isfinite(vec[i])) {
        return Status::Internal(where + label + " value " + std::to_string(i) + " (" +
                                FormatSeconds(values[i]) + ") is outside the float range");
      }
    }
    return vec;
  }

  const KServeOptions options_;
  ModelInfo info_;
  HttpClient client_;
  const std::string ready_target_;
  const std::string infer_target_;
};

}  // namespace

Result<std::unique_ptr<Model>> CreateKServeModel(const KServeOptions& options) {
  try {
    MLINK_RETURN_IF_ERROR(ValidateOptions(options));
    Result<HttpUrl> url = ParseHttpUrl(options.url);
    if (!url.ok()) return url.status().WithContext("KServe options");
    auto model = std::make_unique<KServeModel>(options, std::move(url).value());
    MLINK_RETURN_IF_ERROR(model->CheckReady());
    return std::unique_ptr<Model>(std::move(model));
  } catch (const std::exception& e) {
    return Status::Internal("KServe model '" + options.model + "' at " + options.url + ": " +
                            e.what());
  }
}

}  // namespace mlink::edge
