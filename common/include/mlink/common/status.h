// Status and Result<T>: the error type used at every module boundary.
//
// A Status is either OK or carries a code and a human-readable message that names the thing
// that failed and what was expected. Exceptions thrown by third-party libraries (LibTorch,
// cereal, OpenCV, yaml-cpp) are caught at their adapter and turned into a Status there; no
// exception crosses a module boundary, a handler or a thread.
#pragma once

#include <cassert>
#include <optional>
#include <ostream>
#include <string>
#include <utility>

namespace mlink {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // the caller passed something malformed (bad config, bad spec, bad message)
  kNotFound,         // a file, key, link or row that should exist does not
  kAlreadyExists,    // an idempotent write saw its key before (e.g. a duplicate update)
  kFailedPrecondition,  // the system is not in a state where the call makes sense
  kOutOfRange,       // a value or size exceeded a hard limit
  kUnavailable,      // a peer or resource is temporarily gone; retrying may help
  kDeadlineExceeded,
  kPermissionDenied,
  kDataLoss,         // stored data is corrupt or unreadable
  kInternal,         // a bug or an unexpected library failure
};

// Stable lower-case name of a code, e.g. "invalid_argument".
const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return {StatusCode::kInvalidArgument, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status AlreadyExists(std::string msg) { return {StatusCode::kAlreadyExists, std::move(msg)}; }
  static Status FailedPrecondition(std::string msg) { return {StatusCode::kFailedPrecondition, std::move(msg)}; }
  static Status OutOfRange(std::string msg) { return {StatusCode::kOutOfRange, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status DeadlineExceeded(std::string msg) { return {StatusCode::kDeadlineExceeded, std::move(msg)}; }
  static Status PermissionDenied(std::string msg) { return {StatusCode::kPermissionDenied, std::move(msg)}; }
  static Status DataLoss(std::string msg) { return {StatusCode::kDataLoss, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "invalid_argument: <message>", or "ok".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status WithContext(const std::string& context) const;

 private:
  Status(StatusCode code, std::string msg) : code_(code), message_(std::move(msg)) {}

  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

std::ostream& operator<<(std::ostream& os, const Status& s);

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "a Result built from a Status must carry an error");
    if (status_.ok()) status_ = Status::Internal("Result constructed from an OK status");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  // Precondition: ok().
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace mlink

#define MLINK_CONCAT_INNER_(a, b) a##b
#define MLINK_CONCAT_(a, b) MLINK_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function if `expr` is not OK.
#define MLINK_RETURN_IF_ERROR(expr)               \
  do {                                            \
    ::mlink::Status mlink_status_ = (expr);       \
    if (!mlink_status_.ok()) return mlink_status_; \
  } while (0)

// `MLINK_ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define MLINK_ASSIGN_OR_RETURN(lhs, rexpr) \
  MLINK_ASSIGN_OR_RETURN_IMPL_(MLINK_CONCAT_(mlink_result_, __LINE__), lhs, rexpr)
#define MLINK_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                 \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
