#include "mlink/common/flat_params.h"

#include <gtest/gtest.h>

#include <cmath>

namespace mlink {
namespace {

FlatParams Make(std::vector<float> data) {
  FlatParams p;
  p.names = {"w", "b"};
  p.shapes = {{2, 2}, {2}};
  p.data = std::move(data);
  return p;
}

TEST(FlatParamsTest, ValidatesLayout) {
  EXPECT_TRUE(Make({1, 2, 3, 4, 5, 6}).Validate().ok());
  Status short_data = Make({1, 2, 3}).Validate();
  EXPECT_EQ(short_data.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(short_data.message().find("shapes hold 6 values but data has 3"), std::string::npos);
  FlatParams dup = Make({1, 2, 3, 4, 5, 6});
  dup.names[1] = "w";
  EXPECT_NE(dup.Validate().message().find("duplicate name 'w'"), std::string::npos);
}

TEST(FlatParamsTest, ChecksumSeesEveryBitAndTheLayout) {
  FlatParams a = Make({1, 2, 3, 4, 5, 6});
  FlatParams b = a;
  EXPECT_EQ(a.Checksum(), b.Checksum());
  b.data[5] = std::nextafter(6.0f, 7.0f);
  EXPECT_NE(a.Checksum(), b.Checksum());
  FlatParams c = a;
  c.shapes = {{4}, {2}};
  EXPECT_NE(a.LayoutHash(), c.LayoutHash());
  // Known value: FNV-1a 64 of "a" is af63dc4c8601ec8c.
  EXPECT_EQ(Fnv1a64("a", 1), 0xaf63dc4c8601ec8cULL);
}

TEST(FlatParamsTest, DeltaArithmetic) {
  FlatParams before = Make({1, 2, 3, 4, 5, 6});
  FlatParams after = Make({2, 2, 1, 4, 5, 9});
  auto delta = Subtract(after, before);
  ASSERT_TRUE(delta.ok());
  EXPECT_EQ(delta->data, (std::vector<float>{1, 0, -2, 0, 0, 3}));
  FlatParams x = before;
  ASSERT_TRUE(Axpy(0.5f, *delta, &x).ok());
  EXPECT_EQ(x.data, (std::vector<float>{1.5f, 2, 2, 4, 5, 7.5f}));
  EXPECT_DOUBLE_EQ(delta->L2Norm(), std::sqrt(14.0));
  FlatParams other;
  other.names = {"w"};
  other.shapes = {{6}};
  other.data.assign(6, 0);
  EXPECT_FALSE(Subtract(after, other).ok());
  x.data[0] = NAN;
  EXPECT_FALSE(x.AllFinite());
}

}  // namespace
}  // namespace mlink
