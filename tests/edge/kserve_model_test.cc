#include "mlink/edge/kserve_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace mlink::edge {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Json = nlohmann::json;

struct Request {
  std::string method;
  std::string target;
  std::string content_type;
  std::string body;
};

struct Reply {
  int status = 200;
  std::string body;
  bool hang = false;         // keep the connection open and never answer
  bool close_after = false;  // answer (advertising keep-alive), then drop the connection
};

// A real HTTP/1.1 server on 127.0.0.1 (ephemeral port) running `handler` on its own thread.
class FakeServer {
 public:
  using Handler = std::function<Reply(const Request&)>;

  explicit FakeServer(Handler handler)
      : handler_(std::move(handler)),
        acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    Accept();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~FakeServer() {
    ioc_.stop();
    thread_.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int connections() const { return connections_.load(); }
  std::vector<Request> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  class Session : public std::enable_shared_from_this<Session> {
   public:
    Session(tcp::socket socket, FakeServer* server) : socket_(std::move(socket)), server_(server) {}

    void Read() {
      req_ = {};
      http::async_read(socket_, buffer_, req_,
                       [self = shared_from_this()](beast::error_code ec, std::size_t) {
                         if (!ec) self->Answer();
                       });
    }

   private:
    void Answer() {
      Request r{std::string(req_.method_string()), std::string(req_.target()),
                std::string(req_[http::field::content_type]), req_.body()};
      {
        std::lock_guard<std::mutex> lock(server_->mu_);
        server_->requests_.push_back(r);
      }
      Reply reply = server_->handler_(r);
      if (reply.hang) {
        server_->parked_.push_back(shared_from_this());
        return;
      }
      res_ = {};
      res_.version(11);
      res_.result(static_cast<unsigned>(reply.status));
      res_.set(http::field::content_type, "application/json");
      res_.keep_alive(req_.keep_alive());
      res_.body() = std::move(reply.body);
      res_.prepare_payload();
      http::async_write(socket_, res_,
                        [self = shared_from_this(), close = reply.close_after](beast::error_code ec,
                                                                               std::size_t) {
                          if (ec || close) {
                            beast::error_code ignored;
                            self->socket_.close(ignored);
                            return;
                          }
                          self->Read();
                        });
    }

    tcp::socket socket_;
    FakeServer* server_;
    beast::flat_buffer buffer_;
    http::request<http::string_body> req_;
    http::response<http::string_body> res_;
  };

  void Accept() {
    acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;
      ++connections_;
      std::make_shared<Session>(std::move(socket), this)->Read();
      Accept();
    });
  }

  Handler handler_;
  asio::io_context ioc_;  // destroyed after the sessions it still holds
  tcp::acceptor acceptor_;
  std::vector<std::shared_ptr<Session>> parked_;  // server thread only
  uint16_t port_ = 0;
  std::atomic<int> connections_{0};
  mutable std::mutex mu_;
  std::vector<Request> requests_;  // guarded by mu_
  std::thread thread_;
};

// Path "/v2/models/{name}/{verb}" -> {name, verb}; empty on anything else.
std::pair<std::string, std::string> ParseTarget(const std::string& target) {
  const std::string prefix = "/v2/models/";
  if (target.rfind(prefix, 0) != 0) return {};
  const std::string rest = target.substr(prefix.size());
  const std::size_t slash = rest.find('/');
  if (slash == std::string::npos) return {};
  return {rest.substr(0, slash), rest.substr(slash + 1)};
}

Reply Error(int status, const std::string& message) {
  return {status, Json{{"error", message}}.dump()};
}

// The tiny served model "stats": outputs "stats" = [mean of the input, number of input values]
// and "head" = the first three input values.
Reply StatsInfer(const Request& req) {
  const Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.contains("inputs")) return Error(400, "bad request body");
  const Json& data = body["inputs"][0]["data"];
  double sum = 0;
  for (const Json& v : data) sum += v.get<double>();
  const double n = static_cast<double>(data.size());
  Json head = Json::array();
  for (std::size_t i = 0; i < 3 && i < data.size(); ++i) head.push_back(data[i]);
  Json out = {
      {"model_name", "stats"},
      {"outputs",
       {{{"name", "stats"}, {"shape", {1, 2}}, {"datatype", "FP64"}, {"data", {sum / n, n}}},
        {{"name", "head"}, {"shape", {head.size()}}, {"datatype", "FP32"}, {"data", head}}}}};
  return {200, out.dump()};
}

// Serves "stats" plus a few misbehaving models; any other name is unknown (404).
Reply TinyKServe(const Request& req) {
  const auto [name, verb] = ParseTarget(req.target);
  static const std::vector<std::string> kKnown = {"stats", "broken", "garbage", "short", "words"};
  if (std::find(kKnown.begin(), kKnown.end(), name) == kKnown.end()) {
    return Error(404, "model '" + name + "' not found");
  }
  if (verb == "ready" && req.method == "GET") return {200, ""};
  if (verb != "infer" || req.method != "POST") return Error(405, "unsupported");
  if (name == "stats") return StatsInfer(req);
  if (name == "broken") return Error(500, "CUDA out of memory");
  if (name == "garbage") return {200, R"({"outputs": [{"name": "y", "data": [1, 2)"};
  if (name == "short") {
    return {200,
            R"({"outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [0.5]}]})"};
  }
  return {200,
          R"({"outputs": [{"name": "y", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]})"};
}

KServeOptions Options(const std::string& url, const std::string& model) {
  KServeOptions o;
  o.url = url;
  o.model = model;
  o.input_name = "pixels";
  o.width = 64;
  o.height = 64;
  o.grayscale = true;
  o.scale = 1.0;
  o.output_dim = 2;
  o.task = link::TaskKind::kRegression;
  o.timeout_s = 1.0;
  return o;
}

// 64x64 BGR frame: top half grey 10, bottom half grey 30.
Frame TwoToneFrame() {
  Frame f;
  f.image = cv::Mat(64, 64, CV_8UC3, cv::Scalar(10, 10, 10));
  f.image.rowRange(32, 64).setTo(cv::Scalar(30, 30, 30));
  return f;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(KServeModelTest, ReadyAndInferReturnsTheExactVector) {
  FakeServer server(TinyKServe);
  auto model = CreateKServeModel(Options(server.url(), "stats"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->info().name, "stats");
  EXPECT_EQ((*model)->info().kind, "kserve");
  EXPECT_EQ((*model)->info().format, link::OutputFormat::Vector(2));
  EXPECT_EQ((*model)->info().task, link::TaskKind::kRegression);

  auto out = (*model)->Run(TwoToneFrame());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->vec, (std::vector<float>{20.0f, 4096.0f}));
  EXPECT_TRUE(out->tokens.empty());
}

TEST(KServeModelTest, SendsNhwcFp32RequestAfterResizeAndScale) {
  FakeServer server(TinyKServe);
  KServeOptions o = Options(server.url(), "stats");
  o.width = 32;
  o.height = 16;
  o.scale = 0.5;
  auto model = CreateKServeModel(o);
  ASSERT_TRUE(model.ok()) << model.status();
  Frame frame;
  frame.image = cv::Mat(128, 128, CV_8UC3, cv::Scalar(40, 40, 40));
  auto out = (*model)->Run(frame);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->vec, (std::vector<float>{20.0f, 512.0f}));

  const std::vector<Request> requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].target, "/v2/models/stats/ready");
  EXPECT_EQ(requests[1].method, "POST");
  EXPECT_EQ(requests[1].target, "/v2/models/stats/infer");
  EXPECT_EQ(requests[1].content_type, "application/json");
  const Json body = Json::parse(requests[1].body);
  ASSERT_EQ(body["inputs"].size(), 1u);
  const Json& input = body["inputs"][0];
  EXPECT_EQ(input["name"], "pixels");
  EXPECT_EQ(input["datatype"], "FP32");
  EXPECT_EQ(input["shape"], Json({1, 16, 32, 1}));
  ASSERT_EQ(input["data"].size(), 512u);
  for (const Json& v : input["data"]) ASSERT_EQ(v.get<double>(), 20.0);
}

TEST(KServeModelTest, ColourInputKeepsBgrOrSwapsToRgbAndSelectsNamedOutput) {
  FakeServer server(TinyKServe);
  Frame frame;
  frame.image = cv::Mat(8, 8, CV_8UC3, cv::Scalar(10, 20, 30));  // B, G, R
  for (bool swap_rb : {false, true}) {
    KServeOptions o = Options(server.url(), "stats");
    o.width = 4;
    o.height = 2;
    o.grayscale = false;
    o.swap_rb = swap_rb;
    o.output_name = "head";
    o.output_dim = 3;
    auto model = CreateKServeModel(o);
    ASSERT_TRUE(model.ok()) << model.status();
    auto out = (*model)->Run(frame);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->vec,
              swap_rb ? (std::vector<float>{30, 20, 10}) : (std::vector<float>{10, 20, 30}));
    const Json body = Json::parse(server.requests().back().body);
    EXPECT_EQ(body["inputs"][0]["shape"], Json({1, 2, 4, 3}));
  }
}

TEST(KServeModelTest, ReusesOneKeepAliveConnection) {
  FakeServer server(TinyKServe);
  auto model = CreateKServeModel(Options(server.url(), "stats"));
  ASSERT_TRUE(model.ok()) << model.status();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*model)->Run(TwoToneFrame()).ok());
  EXPECT_EQ(server.connections(), 1);
}

TEST(KServeModelTest, RetriesOnceWhenTheServerDroppedTheIdleConnection) {
  FakeServer server([](const Request& req) {
    Reply r = TinyKServe(req);
    r.close_after = true;  // like a server whose idle timeout closed the connection
    return r;
  });
  auto model = CreateKServeModel(Options(server.url(), "stats"));
  ASSERT_TRUE(model.ok()) << model.status();
  for (int i = 0; i < 2; ++i) {
    auto out = (*model)->Run(TwoToneFrame());
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->vec, (std::vector<float>{20.0f, 4096.0f}));
  }
  EXPECT_EQ(server.connections(), 3);
}

TEST(KServeModelTest, UnknownModelIsNotReady) {
  FakeServer server(TinyKServe);
  auto model = CreateKServeModel(Options(server.url(), "nope"));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(model.status().message(), "KServe model 'nope' at " + server.url() +
                                          "/v2/models/nope/ready: not ready (HTTP 404: model "
                                          "'nope' not found)");
}

TEST(KServeModelTest, UnreachableEndpointIsUnavailableNamingTheUrl) {
  uint16_t port = 0;
  {
    asio::io_context ioc;
    tcp::acceptor probe(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = probe.local_endpoint().port();
  }  // closed: nothing listens there now
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  auto model = CreateKServeModel(Options(url, "x"));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(model.status().message(),
            "KServe model 'x' at " + url + "/v2/models/x/ready: connection refused");
}

TEST(KServeModelTest, ServerErrorStatusIsReported) {
  FakeServer server(TinyKServe);
  auto model = CreateKServeModel(Options(server.url(), "broken"));
  ASSERT_TRUE(model.ok()) << model.status();
  auto out = (*model)->Run(TwoToneFrame());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInternal);
  EXPECT_EQ(out.status().message(), "KServe model 'broken' at " + server.url() +
                                        "/v2/models/broken/infer: HTTP 500: CUDA out of memory");
}

TEST(KServeModelTest, MalformedJsonIsAnError) {
  FakeServer server(TinyKServe);
  auto model = CreateKServeModel(Options(server.url(), "garbage"));
  ASSERT_TRUE(model.ok()) << model.status();
  auto out = (*model)->Run(TwoToneFrame());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInternal);
  EXPECT_TRUE(Contains(out.status().message(), "KServe model 'garbage'")) << out.status();
  EXPECT_TRUE(Contains(out.status().message(), "malformed JSON response")) << out.status();
}

TEST(KServeModelTest, WrongOutputLengthIsAnError) {
  FakeServer server(TinyKServe);
  auto model = CreateKServeModel(Options(server.url(), "short"));
  ASSERT_TRUE(model.ok()) << model.status();
  auto out = (*model)->Run(TwoToneFrame());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(out.status().message(), "output 'y' has 1 values; expected output_dim = 2"))
      << out.status();
}

TEST(KServeModelTest, NonNumericDataAndMissingOutputAreErrors) {
  FakeServer server(TinyKServe);
  auto words = CreateKServeModel(Options(server.url(), "words"));
  ASSERT_TRUE(words.ok()) << words.status();
  auto out = (*words)->Run(TwoToneFrame());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInternal);
  EXPECT_TRUE(Contains(out.status().message(), "output 'y' has non-numeric data")) << out.status();

  KServeOptions o = Options(server.url(), "stats");
  o.output_name = "logits";
  auto stats = CreateKServeModel(o);
  ASSERT_TRUE(stats.ok()) << stats.status();
  out = (*stats)->Run(TwoToneFrame());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      Contains(out.status().message(), "no output named 'logits' (outputs: 'stats', 'head')"))
      << out.status();
}

TEST(KServeModelTest, SilentServerTimesOutAndTheModelRecovers) {
  std::atomic<bool> silent{true};
  FakeServer server([&silent](const Request& req) {
    Reply r = TinyKServe(req);
    r.hang = silent.load() && Contains(req.target, "/infer");
    return r;
  });
  KServeOptions o = Options(server.url(), "stats");
  o.timeout_s = 0.3;
  auto model = CreateKServeModel(o);
  ASSERT_TRUE(model.ok()) << model.status();

  const auto start = std::chrono::steady_clock::now();
  auto out = (*model)->Run(TwoToneFrame());
  const double elapsed = SecondsSince(start);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(out.status().message(), "KServe model 'stats' at " + server.url() +
                                        "/v2/models/stats/infer: timed out after 0.3 s");
  EXPECT_GE(elapsed, 0.25);
  EXPECT_LT(elapsed, 1.0);

  silent = false;
  out = (*model)->Run(TwoToneFrame());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->vec, (std::vector<float>{20.0f, 4096.0f}));
  EXPECT_EQ(server.connections(), 2);
}

TEST(KServeModelTest, SilentReadinessCheckIsUnavailableWithinTheTimeout) {
  FakeServer server([](const Request&) { return Reply{200, "", /*hang=*/true}; });
  KServeOptions o = Options(server.url(), "stats");
  o.timeout_s = 0.2;
  const auto start = std::chrono::steady_clock::now();
  auto model = CreateKServeModel(o);
  const double elapsed = SecondsSince(start);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Contains(model.status().message(), "/v2/models/stats/ready: timed out after 0.2 s"))
      << model.status();
  EXPECT_LT(elapsed, 1.0);
}

TEST(KServeModelTest, EmptyFrameIsInvalid) {
  FakeServer server(TinyKServe);
  auto model = CreateKServeModel(Options(server.url(), "stats"));
  ASSERT_TRUE(model.ok()) << model.status();
  auto out = (*model)->Run(Frame{});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(out.status().message(), "empty frame")) << out.status();
}

TEST(KServeModelTest, LocalNameDiffersFromServedName) {
  FakeServer server(TinyKServe);
  KServeOptions o = Options(server.url(), "broken");
  o.name = "cam1-detector";
  auto model = CreateKServeModel(o);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->info().name, "cam1-detector");
  auto out = (*model)->Run(TwoToneFrame());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message().rfind("model 'cam1-detector': KServe model 'broken' at ", 0), 0u)
      << out.status();
}

TEST(KServeModelTest, InvalidOptionsNameTheField) {
  struct Case {
    std::function<void(KServeOptions*)> edit;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](KServeOptions* o) { o->url.clear(); }, "url is required"},
      {[](KServeOptions* o) { o->url = "https://example.com"; }, "https is not supported"},
      {[](KServeOptions* o) { o->url = "ftp://example.com"; }, "expected http://"},
      {[](KServeOptions* o) { o->url = "http://host:99999"; }, "port 99999"},
      {[](KServeOptions* o) { o->url = "http://:80"; }, "missing host"},
      {[](KServeOptions* o) { o->model.clear(); }, "model is required"},
      {[](KServeOptions* o) { o->model = "a/b"; }, "model 'a/b' must be one URL path segment"},
      {[](KServeOptions* o) { o->input_name.clear(); }, "input_name"},
      {[](KServeOptions* o) { o->width = 0; }, "width 0"},
      {[](KServeOptions* o) { o->height = -3; }, "height -3"},
      {[](KServeOptions* o) { o->output_dim = 0; }, "output_dim must be > 0"},
      {[](KServeOptions* o) { o->task = link::TaskKind::kSequence; }, "task sequence"},
      {[](KServeOptions* o) { o->timeout_s = 0; }, "timeout_s"},
      {[](KServeOptions* o) { o->declared_cost = -1; }, "declared_cost"},
  };
  for (const Case& c : cases) {
    KServeOptions o = Options("http://127.0.0.1:1", "stats");
    c.edit(&o);
    auto model = CreateKServeModel(o);
    ASSERT_FALSE(model.ok()) << c.field;
    EXPECT_EQ(model.status().code(), StatusCode::kInvalidArgument) << model.status();
    EXPECT_TRUE(Contains(model.status().message(), c.field)) << model.status() << " / " << c.field;
  }
}

TEST(KServeModelTest, UrlWithPrefixAndTrailingSlash) {
  FakeServer server([](const Request& req) {
    const std::string prefix = "/serving/kserve";
    if (req.target.rfind(prefix, 0) != 0) return Error(404, "no such prefix");
    Request inner = req;
    inner.target = req.target.substr(prefix.size());
    return TinyKServe(inner);
  });
  auto model = CreateKServeModel(Options(server.url() + "/serving/kserve/", "stats"));
  ASSERT_TRUE(model.ok()) << model.status();
  auto out = (*model)->Run(TwoToneFrame());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->vec, (std::vector<float>{20.0f, 4096.0f}));
}

}  // namespace
}  // namespace mlink::edge
