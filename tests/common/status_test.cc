#include "mlink/common/status.h"

#include <gtest/gtest.h>

namespace mlink {
namespace {

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Status Quarter(int x, int* out) {
  MLINK_ASSIGN_OR_RETURN(int h, Half(x));
  MLINK_ASSIGN_OR_RETURN(*out, Half(h));
  return Status::Ok();
}

TEST(StatusTest, CodesAndMessages) {
  EXPECT_TRUE(Status::Ok().ok());
  Status s = Status::NotFound("link 'a' not found");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "not_found: link 'a' not found");
  EXPECT_EQ(s.WithContext("loading").message(), "loading: link 'a' not found");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

TEST(StatusTest, ResultPropagates) {
  int q = 0;
  EXPECT_TRUE(Quarter(12, &q).ok());
  EXPECT_EQ(q, 3);
  Status bad = Quarter(6, &q);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message(), "3 is odd");
}

}  // namespace
}  // namespace mlink
