#include "mlink/common/sqlite.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <cstring>
#include <fstream>

namespace mlink::sql {
namespace {

namespace fs = std::filesystem;

class SqliteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mlink-sqlite-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    path_ = (dir_ / "state.db").string();
  }
  void TearDown() override {
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(dir_);
  }
  fs::path dir_;
  std::string path_;
};

const std::vector<std::string> kSchema = {
    "CREATE TABLE updates (edge TEXT NOT NULL, round INTEGER NOT NULL, delta BLOB NOT NULL,"
    " PRIMARY KEY (edge, round))",
    "ALTER TABLE updates ADD COLUMN samples INTEGER NOT NULL DEFAULT 0",
};

TEST_F(SqliteTest, MigratesWritesAndReadsBackAfterReopen) {
  {
    auto db = Database::Open(path_);
    ASSERT_TRUE(db.ok()) << db.status();
    auto v = (*db)->Migrate(kSchema);
    ASSERT_TRUE(v.ok()) << v.status();
    EXPECT_EQ(*v, 2);
    auto ins = (*db)->Prepare("INSERT INTO updates (edge, round, delta, samples) VALUES (?, ?, ?, ?)");
    ASSERT_TRUE(ins.ok());
    const float delta[3] = {0.5f, -1.25f, 3.0f};
    auto tx = Transaction::Begin(db->get());
    ASSERT_TRUE(tx.ok());
    ASSERT_TRUE(ins->Bind(1, "site-a").Bind(2, 7).BindBlob(3, delta, sizeof(delta)).Bind(4, 120).Run().ok());
    ASSERT_TRUE(tx->Commit().ok());
  }
  auto db = Database::Open(path_);
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(*(*db)->Migrate(kSchema), 2) << "re-running migrations is a no-op";
  auto q = (*db)->Prepare("SELECT edge, round, delta, samples FROM updates");
  ASSERT_TRUE(q.ok());
  ASSERT_TRUE(*q->Step());
  EXPECT_EQ(q->ColumnText(0), "site-a");
  EXPECT_EQ(q->ColumnInt(1), 7);
  auto blob = q->ColumnBlob(2);
  ASSERT_EQ(blob.size(), 3 * sizeof(float));
  float back[3];
  std::memcpy(back, blob.data(), sizeof(back));
  EXPECT_EQ(back[1], -1.25f);
  EXPECT_EQ(q->ColumnInt(3), 120);
  EXPECT_FALSE(*q->Step());

  auto s = (*db)->Prepare("PRAGMA journal_mode");
  ASSERT_TRUE(*s->Step());
  EXPECT_EQ(s->ColumnText(0), "wal");
}

TEST_F(SqliteTest, UncommittedTransactionRollsBackAndDuplicatesAreRejected) {
  auto db = Database::Open(path_);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Migrate(kSchema).ok());
  {
    auto tx = Transaction::Begin(db->get());
    ASSERT_TRUE((*db)->Exec("INSERT INTO updates (edge, round, delta) VALUES ('a', 1, x'00')").ok());
    // no Commit: destroyed here
  }
  auto count = (*db)->Prepare("SELECT COUNT(*) FROM updates");
  ASSERT_TRUE(*count->Step());
  EXPECT_EQ(count->ColumnInt(0), 0);

  ASSERT_TRUE((*db)->Exec("INSERT INTO updates (edge, round, delta) VALUES ('a', 1, x'00')").ok());
  Status dup = (*db)->Exec("INSERT INTO updates (edge, round, delta) VALUES ('a', 1, x'01')");
  EXPECT_EQ(dup.code(), StatusCode::kAlreadyExists) << dup;
  EXPECT_NE(dup.message().find(path_), std::string::npos);
}

TEST_F(SqliteTest, NewerSchemaIsRefused) {
  auto db = Database::Open(path_);
  ASSERT_TRUE((*db)->Migrate(kSchema).ok());
  auto old = (*db)->Migrate({kSchema[0]});
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(old.status().message().find("newer than this program knows"), std::string::npos);
}

TEST_F(SqliteTest, CorruptFileIsDataLossNotACrash) {
  {
    std::ofstream out(path_, std::ios::binary);
    out << "this is not an sqlite database, just some bytes that happen to be here...........";
  }
  auto db = Database::Open(path_);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), StatusCode::kDataLoss) << db.status();
  EXPECT_NE(db.status().message().find(path_), std::string::npos);
  // The file is left alone for inspection.
  EXPECT_TRUE(fs::exists(path_));
}

TEST_F(SqliteTest, BadPlacesAreClearErrors) {
  auto missing_dir = Database::Open((dir_ / "no" / "such" / "x.db").string());
  ASSERT_FALSE(missing_dir.ok());
  EXPECT_EQ(missing_dir.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing_dir.status().message().find("does not exist"), std::string::npos);

  Database::Options ro;
  ro.create_if_missing = false;
  auto absent = Database::Open(path_, ro);
  EXPECT_EQ(absent.status().code(), StatusCode::kNotFound);

  auto dir = Database::Open(dir_.string());
  EXPECT_EQ(dir.status().code(), StatusCode::kInvalidArgument);

  auto db = Database::Open(path_);
  auto bad_sql = (*db)->Prepare("SELEC nonsense");
  ASSERT_FALSE(bad_sql.ok());
  EXPECT_NE(bad_sql.status().message().find("SELEC nonsense"), std::string::npos);
}

}  // namespace
}  // namespace mlink::sql
