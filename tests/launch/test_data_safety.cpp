// End-to-end tests of what shardfit does with data that is not what it should be: ranks that see different copies
// of a file (Open MPI's MPMD syntax gives each rank its own working directory), non-finite values, bad CSV cells
// and a file rewritten under a running fit. Every case must end every rank non-zero with one message naming the
// file (and the row or the ranks), without a crash or a hang. Not an MPI test itself: it starts mpirun.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "dist/io/npy_writer.h"
#include "tests/support/cli_fixture.h"
#include "tests/support/launch_process.h"

namespace {

namespace fs = std::filesystem;
using shardfit::testing::count_of;
using shardfit::testing::describe;
using shardfit::testing::error_message;
using shardfit::testing::FreshDirTest;
using shardfit::testing::Launch;
using shardfit::testing::rank_statuses;
using shardfit::testing::Ranks;
using shardfit::testing::replaced;
using shardfit::testing::Watch;
using shardfit::testing::write_small_data;
using shardfit::testing::write_text;

constexpr double kKillSeconds = 40.0;  // no launch is waited for longer than this

Launch run_mpi(const std::vector<Ranks>& contexts, Watch watch) {
  return shardfit::testing::run_mpirun(contexts, watch, kKillSeconds);
}

// Every rank ends by itself, non-zero, within the limit; one message, agreed (no MPI_Abort). Returns the message.
std::string expect_agreed_failure(const Launch& launch, int ranks) {
  const std::string message = shardfit::testing::expect_failure_on_every_rank(launch, ranks);
  EXPECT_EQ(count_of(launch.err, "MPI_ABORT"), 0) << "a setup error is agreed, not aborted\n" << describe(launch);
  std::printf("[data] job over after %.3f s: %s\n", launch.seconds, message.substr(0, message.find('\n')).c_str());
  return message;
}

// 24 samples of 64 features, class ids 0..9; batch 8 gives 3 steps per epoch.
constexpr const char* kSmallJob = R"(model {
  layers { dense { units: 16 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
metrics: "accuracy"
fit { epochs: 1 batch_size: 8 verbose: 0 }
data { train { x { path: "x.npy" } y { path: "y.npy" } } }
outputs { history_dir: "history" }
)";

constexpr int64_t kFeatures = shardfit::testing::kSmallFeatures;

std::vector<float> small_x(int64_t rows, float offset = 0.0F) {
  std::vector<float> x(static_cast<size_t>(rows * kFeatures));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) / 16.0F + offset;
  return x;
}

class DataSafetyTest : public FreshDirTest {
 protected:
  DataSafetyTest() : FreshDirTest("data") {}

  // Two ranks, rank 0 working in dir_/a and rank 1 in dir_/b, each with its own copy of the job and the data.
  Launch run_with_two_copies() {
    const fs::path a = dir_ / "a", b = dir_ / "b";
    write_text(a / "job.pbtxt", kSmallJob);
    write_text(b / "job.pbtxt", kSmallJob);
    return run_mpi({{1, a, {"fit", "job.pbtxt"}}, {1, b, {"fit", "job.pbtxt"}}}, Watch::kEachRankReports);
  }
  void SetUp() override {
    FreshDirTest::SetUp();
    fs::create_directories(dir_ / "a");
    fs::create_directories(dir_ / "b");
  }
};

// --- 1. every rank must see the same data ----------------------------------------------------------------------------

TEST_F(DataSafetyTest, StaleCopyWithMoreRowsOnOneRank) {
  write_small_data(dir_ / "a", 24);
  write_small_data(dir_ / "b", 30);  // a stale copy: more rows, so more steps per epoch
  const Launch launch = run_with_two_copies();
  const std::string message = expect_agreed_failure(launch, 2);
  EXPECT_NE(message.find("x.npy"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 0"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
  EXPECT_NE(message.find("30"), std::string::npos) << message;
  EXPECT_NE(message.find("24"), std::string::npos) << message;
}

TEST_F(DataSafetyTest, StaleCopyOfTheSameSizeOnOneRank) {
  write_small_data(dir_ / "a", 24);
  write_small_data(dir_ / "b", 24, 0.5F);  // same shape and bytes, other values
  const Launch launch = run_with_two_copies();
  const std::string message = expect_agreed_failure(launch, 2);
  EXPECT_NE(message.find("x.npy"), std::string::npos) << message;
  EXPECT_EQ(message.find("y.npy"), std::string::npos) << "y is the same on both ranks\n" << message;
  EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
  EXPECT_NE(message.find("fingerprint"), std::string::npos) << message;
}

// --- 2. non-finite features and bad CSV cells, found at setup --------------------------------------------------------

TEST_F(DataSafetyTest, NanInTheFeaturesNamesFileAndRow) {
  // Row 21 lies in rank 1's share: that rank finds it, and every rank stops before the first step.
  write_small_data(dir_);
  std::vector<float> x = small_x(24);
  x[21 * kFeatures + 5] = std::numeric_limits<float>::quiet_NaN();
  shardfit::write_npy(dir_ / "x.npy", x, {24, kFeatures});
  write_text(dir_ / "job.pbtxt", kSmallJob);
  const Launch launch = run_mpi({{2, dir_, {"fit", "job.pbtxt"}}}, Watch::kEachRankReports);
  const std::string message = expect_agreed_failure(launch, 2);
  EXPECT_EQ(message.rfind("error on rank 1 ", 0), 0u) << message;
  EXPECT_NE(message.find("x.npy"), std::string::npos) << message;
  EXPECT_NE(message.find("row 21"), std::string::npos) << message;
  EXPECT_NE(message.find("nan"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir_ / "history" / "history.json")) << "nothing is trained on bad data";
}

TEST_F(DataSafetyTest, InfinityInTheFeaturesIsRefused) {
  write_small_data(dir_);
  std::vector<float> x = small_x(24);
  x[2 * kFeatures] = -std::numeric_limits<float>::infinity();
  shardfit::write_npy(dir_ / "x.npy", x, {24, kFeatures});
  write_text(dir_ / "job.pbtxt", kSmallJob);
  const Launch launch = run_mpi({{2, dir_, {"fit", "job.pbtxt"}}}, Watch::kEachRankReports);
  const std::string message = expect_agreed_failure(launch, 2);
  EXPECT_EQ(message.rfind("error on rank 0 ", 0), 0u) << message;
  EXPECT_NE(message.find("row 2"), std::string::npos) << message;
  EXPECT_NE(message.find("inf"), std::string::npos) << message;
}

TEST_F(DataSafetyTest, PredictAndEvaluateCheckTheirDataToo) {
  write_small_data(dir_);
  write_text(dir_ / "job.pbtxt",
             replaced(kSmallJob, "history_dir: \"history\"", "history_dir: \"history\" export_weights: \"w.npz\""));
  const Launch fit = run_mpi({{2, dir_, {"fit", "job.pbtxt"}}}, Watch::kEachRankReports);
  ASSERT_TRUE(fs::exists(dir_ / "w.npz")) << describe(fit);
  std::vector<float> x = small_x(24);
  x[17 * kFeatures + 3] = std::numeric_limits<float>::infinity();
  shardfit::write_npy(dir_ / "bad_x.npy", x, {24, kFeatures});
  const Launch predict =
      run_mpi({{2, dir_, {"predict", "job.pbtxt", "--weights", "w.npz", "--x", "bad_x.npy", "--output", "p.npy"}}},
              Watch::kEachRankReports);
  const std::string message = expect_agreed_failure(predict, 2);
  EXPECT_NE(message.find("bad_x.npy: row 17, column 3 is inf"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir_ / "p.npy")) << "no predictions from bad data";
  const Launch evaluate =
      run_mpi({{2, dir_, {"evaluate", "job.pbtxt", "--weights", "w.npz", "--x", "bad_x.npy", "--y", "y.npy"}}},
              Watch::kEachRankReports);
  EXPECT_NE(expect_agreed_failure(evaluate, 2).find("bad_x.npy: row 17"), std::string::npos);
}

// 24 rows: 4 features and a label column, with `cell` replacing row `bad_row`'s second feature.
std::string csv_text(int bad_row, const std::string& cell) {
  std::string text = "a,b,c,d,label\n";
  for (int r = 0; r < 24; ++r) {
    text += std::to_string(r % 5) + "," + (r == bad_row ? cell : "0.5") + ",1,2," + std::to_string(r % 3) + "\n";
  }
  return text;
}

constexpr const char* kCsvJob = R"(model {
  layers { dense { units: 8 activation: "relu" } }
  layers { dense { units: 3 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
fit { epochs: 1 batch_size: 8 verbose: 0 }
data { train { x { path: "table.csv" csv { label_name: "label" } } } }
outputs { history_dir: "history" }
)";

TEST_F(DataSafetyTest, CsvNanCellIsRefusedAtSetup) {
  write_text(dir_ / "table.csv", csv_text(20, "nan"));
  write_text(dir_ / "job.pbtxt", kCsvJob);
  const Launch launch = run_mpi({{2, dir_, {"fit", "job.pbtxt"}}}, Watch::kEachRankReports);
  const std::string message = expect_agreed_failure(launch, 2);
  EXPECT_NE(message.find("table.csv"), std::string::npos) << message;
  EXPECT_NE(message.find("line 22"), std::string::npos) << "data row 20 is line 22 after the header\n" << message;
  EXPECT_NE(message.find("'b'"), std::string::npos) << "the column\n" << message;
}

TEST_F(DataSafetyTest, CsvBadCellIsFoundAtSetupNotMidTraining) {
  // A cell that is no number in the last row: without a check at setup, a rank meets it only when a step gathers
  // that row, and ends the job with MPI_Abort.
  write_text(dir_ / "table.csv", csv_text(23, "0.5x"));
  write_text(dir_ / "job.pbtxt", replaced(kCsvJob, "epochs: 1", "epochs: 3"));
  const Launch launch = run_mpi({{2, dir_, {"fit", "job.pbtxt"}}}, Watch::kEachRankReports);
  const std::string message = expect_agreed_failure(launch, 2);
  EXPECT_EQ(message.rfind("error on rank 1 ", 0), 0u) << message;
  EXPECT_NE(message.find("table.csv"), std::string::npos) << message;
  EXPECT_NE(message.find("line 25"), std::string::npos) << message;
  EXPECT_NE(message.find("0.5x"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir_ / "history" / "history.json")) << "no epoch was trained";
}

// --- 3. a data file changed under a running fit ----------------------------------------------------------------------

// Starts a long fit on two ranks, waits for its first epoch in history.json, then calls change() on the data while
// the job trains, and returns how the job ended. The fit would run for minutes if nothing stopped it.
Launch change_data_while_training(const fs::path& dir, Watch watch, const std::function<void()>& change) {
  write_small_data(dir);
  write_text(dir / "job.pbtxt", replaced(kSmallJob, "epochs: 1", "epochs: 1000000"));
  Launch launch;
  std::thread job([&] { launch = run_mpi({{2, dir, {"fit", "job.pbtxt"}}}, watch); });
  const auto start = std::chrono::steady_clock::now();
  while (!fs::exists(dir / "history" / "history.json") &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(20)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(fs::exists(dir / "history" / "history.json")) << "the fit never finished an epoch";
  change();
  job.join();
  return launch;
}

void expect_named_data_change(const Launch& launch, Watch watch) {
  EXPECT_FALSE(launch.timed_out) << "the job went on training on changed data\n" << describe(launch);
  if (watch == Watch::kPlain) {
    EXPECT_NE(launch.exit_code, 0) << describe(launch);
  } else {
    const std::map<int, int> statuses = rank_statuses(launch.err);
    EXPECT_EQ(statuses.size(), 2u) << describe(launch);
    for (const auto& [rank, status] : statuses) EXPECT_NE(status, 0) << "rank " << rank << "\n" << describe(launch);
  }
  const std::string message = error_message(launch);
  EXPECT_NE(message.find("x.npy"), std::string::npos) << describe(launch);
  EXPECT_NE(message.find("changed"), std::string::npos) << describe(launch);
}

TEST_F(DataSafetyTest, DataFileTruncatedDuringTraining) {
  // The file is memory-mapped: reading a page past the new end raises SIGBUS, which must become a message.
  const fs::path x = dir_ / "x.npy";
  // A rank that meets the fault cannot agree with its peers (they may sit in an allreduce): it exits at once and
  // mpirun ends the others, so this case is watched as a user runs it.
  const Launch launch = change_data_while_training(dir_, Watch::kPlain, [&] { fs::resize_file(x, 0); });
  expect_named_data_change(launch, Watch::kPlain);
  EXPECT_EQ(count_of(launch.err, "Bus error"), 0) << describe(launch);
  std::printf("[data] truncated x.npy: job over %.3f s after the start, exit %d\n", launch.seconds, launch.exit_code);
}

TEST_F(DataSafetyTest, DataFileRewrittenInPlaceDuringTraining) {
  // Same size, other values, written into the same file (no SIGBUS): found at the next epoch boundary.
  const fs::path x = dir_ / "x.npy";
  const Launch launch = change_data_while_training(dir_, Watch::kEachRankReports, [&] {
    const std::string bytes = shardfit::npy_bytes(small_x(24, 0.25F), {24, kFeatures});
    const int fd = ::open(x.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  });
  expect_named_data_change(launch, Watch::kEachRankReports);
  EXPECT_EQ(count_of(launch.out + launch.err, "error on rank"), 1) << "an agreed failure\n" << describe(launch);
}

// --- 4. gzip-compressed data files (read through the decompressed cache, dist/io/gzip_cache.h) --------------------

// The small data set's x as x.npy.gz: gzip's own output, as a user would make it.
void write_gzip_x(const fs::path& dir, float offset) {
  shardfit::write_npy(dir / "x.npy", small_x(24, offset), {24, kFeatures});
  ASSERT_EQ(std::system(("gzip -f " + (dir / "x.npy").string()).c_str()), 0);
}

constexpr const char* kGzipSuffix = "x { path: \"x.npy.gz\" }";

TEST_F(DataSafetyTest, TruncatedGzipEndsEveryRankNamingTheFile) {
  ::setenv("SHARDFIT_CACHE_DIR", (dir_ / "cache").c_str(), 1);
  write_small_data(dir_);
  write_gzip_x(dir_, 0.0F);
  fs::resize_file(dir_ / "x.npy.gz", fs::file_size(dir_ / "x.npy.gz") / 2);
  write_text(dir_ / "job.pbtxt", replaced(kSmallJob, "x { path: \"x.npy\" }", kGzipSuffix));
  const Launch launch = run_mpi({{2, dir_, {"fit", "job.pbtxt"}}}, Watch::kEachRankReports);
  ::unsetenv("SHARDFIT_CACHE_DIR");
  const std::string message = expect_agreed_failure(launch, 2);
  EXPECT_NE(message.find("x.npy.gz: truncated gzip file"), std::string::npos) << message;
  EXPECT_NE(message.find("expected a whole gzip file"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir_ / "history" / "history.json")) << "nothing is trained on bad data";
}

TEST_F(DataSafetyTest, DifferentGzipCopiesOnTwoRanksAreTold) {
  // Each rank inflates its own copy (the same cache folder: the names differ with the files), and the agreed check
  // compares the inflated data: other values of the same size are seen by the fingerprint.
  ::setenv("SHARDFIT_CACHE_DIR", (dir_ / "cache").c_str(), 1);
  write_small_data(dir_ / "a", 24);
  write_small_data(dir_ / "b", 24);
  write_gzip_x(dir_ / "a", 0.0F);
  write_gzip_x(dir_ / "b", 0.5F);
  const fs::path a = dir_ / "a", b = dir_ / "b";
  const std::string job = replaced(kSmallJob, "x { path: \"x.npy\" }", kGzipSuffix);
  write_text(a / "job.pbtxt", job);
  write_text(b / "job.pbtxt", job);
  const Launch launch = run_mpi({{1, a, {"fit", "job.pbtxt"}}, {1, b, {"fit", "job.pbtxt"}}}, Watch::kEachRankReports);
  ::unsetenv("SHARDFIT_CACHE_DIR");
  const std::string message = expect_agreed_failure(launch, 2);
  EXPECT_NE(message.find("x.npy.gz"), std::string::npos) << message;
  EXPECT_NE(message.find("gzip npy"), std::string::npos) << message;
  EXPECT_NE(message.find("fingerprint"), std::string::npos) << message;
}

}  // namespace
