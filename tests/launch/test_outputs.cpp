// End-to-end tests of where `shardfit fit` writes (issue 7, points 3, 7, 13, 14): outputs that would replace an
// input or another output, output folders that cannot be written, an earlier run's checkpoint, the path rule (job
// file paths against the job file's folder, command-line paths against the working directory) and the weights
// file fit writes by default. Every failure is expected at setup: before the first epoch, on every rank.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
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
using shardfit::testing::quoted;
using shardfit::testing::rank_statuses;
using shardfit::testing::read_bytes;
using shardfit::testing::Watch;
using shardfit::testing::write_text;

constexpr double kKillSeconds = 40.0;
constexpr int kRanks = 2;

// A tiny job on synthetic data: 24 samples of 8 features, class ids 0..3; `outputs` and `callbacks` appended.
std::string small_job(const std::string& data_dir, const std::string& extra) {
  return R"(model { layers { dense { units: 4 activation: "softmax" } } }
loss: "sparse_categorical_crossentropy"
fit { epochs: 2 batch_size: 8 verbose: 2 }
data { train { x { path: ")" +
         data_dir + R"(x.npy" } y { path: ")" + data_dir + R"(y.npy" } } }
)" + extra +
         "\n";
}

// 24 samples of 8 features, class ids 0..3: the data of small_job.
void write_eight_feature_data(const fs::path& dir) {
  constexpr int64_t kRows = 24;
  constexpr int64_t kFeatures = 8;
  std::vector<float> x(kRows * kFeatures);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) / 7.0F;
  std::vector<int64_t> y(kRows);
  for (int64_t i = 0; i < kRows; ++i) y[i] = i % 4;
  shardfit::write_npy(dir / "x.npy", x, {kRows, kFeatures});
  shardfit::write_npy(dir / "y.npy", y, {kRows});
}

class OutputsTest : public FreshDirTest {
 protected:
  OutputsTest() : FreshDirTest("outputs") {}

  void SetUp() override {
    FreshDirTest::SetUp();
    write_eight_feature_data(dir_);
    data_bytes_ = read_bytes(dir_ / "x.npy") + read_bytes(dir_ / "y.npy");
  }

  void TearDown() override {
    shardfit::testing::release_read_only_folder(immutable_);
    FreshDirTest::TearDown();
  }

  Launch run(const fs::path& wdir, const std::vector<std::string>& args, Watch watch = Watch::kEachRankReports) const {
    return shardfit::testing::run_mpirun(kRanks, wdir, args, watch, kKillSeconds);
  }

  // The failure happened at setup on every rank: all exit non-zero, one message, no epoch began, the data intact.
  std::string expect_setup_failure(const Launch& launch) const {
    // No time limit of its own beyond the launch's: kKillSeconds.
    const std::string message = shardfit::testing::expect_failure_on_every_rank(launch, kRanks, kKillSeconds);
    EXPECT_EQ(count_of(launch.out, "Epoch 1/"), 0) << "no epoch begins\n" << describe(launch);
    EXPECT_TRUE(read_bytes(dir_ / "x.npy") + read_bytes(dir_ / "y.npy") == data_bytes_) << "the data is intact";
    return message;
  }

  // dir_/name, a folder no process can write (make_read_only_folder); empty when this file system cannot make one.
  fs::path read_only_folder(const std::string& name) {
    return shardfit::testing::make_read_only_folder(dir_ / name, immutable_);
  }

  std::string data_bytes_;
  fs::path immutable_;
};

// --- 3. an output never replaces an input ------------------------------------------------------------------------

TEST_F(OutputsTest, OutputsThatWouldReplaceTheDataAreRefusedAtSetup) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"(outputs { history_dir: "out" export_weights: "x.npy" })", "outputs.export_weights"},
      {R"(outputs { history_dir: "out" } callbacks { model_checkpoint { filepath: "y.npy" } })",
       "callbacks[0].model_checkpoint.filepath"},
      {R"(outputs { history_dir: "out" } callbacks { csv_logger { filename: "x.npy" } })",
       "callbacks[0].csv_logger.filename"},
      {R"(outputs { history_dir: "out" export_weights: "job.pbtxt" })", "outputs.export_weights"},
  };
  for (const auto& [outputs, field] : cases) {
    SCOPED_TRACE(outputs);
    write_text(dir_ / "job.pbtxt", small_job("", outputs));
    const std::string job_text = read_bytes(dir_ / "job.pbtxt");
    const std::string message = expect_setup_failure(run(dir_, {"fit", "job.pbtxt"}));
    EXPECT_NE(message.find(field), std::string::npos) << message;
    EXPECT_NE(message.find("an output may not replace a file the run reads"), std::string::npos) << message;
    EXPECT_TRUE(read_bytes(dir_ / "job.pbtxt") == job_text) << "the job file is intact";
  }
}

TEST_F(OutputsTest, TwoOutputsOnOneFileAreRefusedAtSetup) {
  write_text(
      dir_ / "job.pbtxt",
      small_job("", R"(outputs { history_dir: "out" } callbacks { csv_logger { filename: "out/history.csv" } })"));
  const std::string message = expect_setup_failure(run(dir_, {"fit", "job.pbtxt"}));
  EXPECT_NE(message.find("callbacks[0].csv_logger.filename"), std::string::npos) << message;
  EXPECT_NE(message.find("history.csv"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir_ / "out" / "history.csv"));
}

// --- 7. every output location is checked before the first epoch ----------------------------------------------------

TEST_F(OutputsTest, UnwritableOutputLocationsFailAtSetup) {
  write_text(dir_ / "a_file", "not a folder\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"(outputs { history_dir: "out" checkpoint_dir: "a_file/checkpoints" })", "outputs.checkpoint_dir"},
      {R"(outputs { history_dir: "a_file/history" })", "outputs.history_dir"},
      {R"(outputs { history_dir: "out" export_weights: "a_file/w.npz" })", "outputs.export_weights"},
      {R"(outputs { history_dir: "out" } callbacks { csv_logger { filename: "a_file/log.csv" } })",
       "callbacks[0].csv_logger.filename"},
  };
  for (const auto& [outputs, field] : cases) {
    SCOPED_TRACE(outputs);
    write_text(dir_ / "job.pbtxt", small_job("", outputs));
    const std::string message = expect_setup_failure(run(dir_, {"fit", "job.pbtxt"}));
    EXPECT_NE(message.find(field), std::string::npos) << message;
    EXPECT_NE(message.find("a_file"), std::string::npos) << message;
    EXPECT_FALSE(fs::exists(dir_ / "out" / "history.json")) << "nothing was written";
  }
}

TEST_F(OutputsTest, ReadOnlyHistoryFolderFailsAtSetup) {
  const fs::path history = read_only_folder("history");
  if (history.empty()) GTEST_SKIP() << "cannot make a read-only folder here (chattr +i failed)";
  write_text(dir_ / "job.pbtxt",
             small_job("", "outputs { history_dir: " + quoted(history) + " checkpoint_dir: \"ckpt\" }"));
  const std::string message = expect_setup_failure(run(dir_, {"fit", "job.pbtxt"}));
  EXPECT_NE(message.find("outputs.history_dir"), std::string::npos) << message;
  EXPECT_NE(message.find("cannot write in"), std::string::npos) << message;
}

TEST_F(OutputsTest, FreshFitRefusesToReplaceAnEarlierRunsCheckpoint) {
  write_text(dir_ / "job.pbtxt", small_job("", R"(outputs { history_dir: "out" })"));
  const Launch first = run(dir_, {"fit", "job.pbtxt"}, Watch::kPlain);
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const fs::path checkpoint = dir_ / "out" / "checkpoints" / "checkpoint.pb";
  const std::string saved = read_bytes(checkpoint);
  ASSERT_FALSE(saved.empty());

  const std::string message = expect_setup_failure(run(dir_, {"fit", "job.pbtxt"}));
  EXPECT_NE(message.find("outputs.checkpoint_dir"), std::string::npos) << message;
  EXPECT_NE(message.find("--resume"), std::string::npos) << message;
  EXPECT_NE(message.find("--overwrite"), std::string::npos) << message;
  EXPECT_TRUE(read_bytes(checkpoint) == saved) << "the earlier run's checkpoint is intact";

  const Launch resumed = run(dir_, {"fit", "job.pbtxt", "--resume"}, Watch::kPlain);
  EXPECT_EQ(resumed.exit_code, 0) << describe(resumed);
  const Launch replaced = run(dir_, {"fit", "job.pbtxt", "--overwrite"}, Watch::kPlain);
  EXPECT_EQ(replaced.exit_code, 0) << describe(replaced);
  EXPECT_EQ(count_of(replaced.out, "Epoch 1/2"), 1) << "a fresh run\n" << describe(replaced);

  const std::string both = expect_setup_failure(run(dir_, {"fit", "job.pbtxt", "--resume", "--overwrite"}));
  EXPECT_NE(both.find("contradict"), std::string::npos) << both;
}

// --- 13. one rule for the paths of a job file, one for the command line --------------------------------------------

TEST_F(OutputsTest, JobFilePathsResolveAgainstTheJobFileAndFlagsAgainstTheWorkingDirectory) {
  const fs::path jobs = dir_ / "jobs";
  const fs::path work = dir_ / "work";
  fs::create_directories(jobs);
  fs::create_directories(work);
  write_text(jobs / "job.pbtxt", small_job("../", R"(outputs { history_dir: "out" }
callbacks { model_checkpoint { filepath: "ckpt/w.{epoch:02d}.npz" } }
callbacks { csv_logger { filename: "log.csv" } })"));

  const Launch from_job = run(work, {"fit", "../jobs/job.pbtxt"}, Watch::kPlain);
  ASSERT_EQ(from_job.exit_code, 0) << describe(from_job);
  for (const char* file : {"out/history.json", "out/loss.svg", "out/weights.npz", "out/checkpoints/checkpoint.pb",
                           "ckpt/w.02.npz", "log.csv"}) {
    EXPECT_TRUE(fs::is_regular_file(jobs / file)) << "relative to the job file's folder: " << file;
  }
  EXPECT_TRUE(fs::is_empty(work)) << "nothing lands in the working directory";

  const Launch from_flags = run(work,
                                {"fit", (jobs / "job.pbtxt").string(), "--history", "flag_out", "--callback",
                                 R"(csv_logger { filename: "flag.csv" })"},
                                Watch::kPlain);
  ASSERT_EQ(from_flags.exit_code, 0) << describe(from_flags);
  EXPECT_TRUE(fs::is_regular_file(work / "flag_out" / "history.json")) << "--history is relative to the cwd";
  EXPECT_TRUE(fs::is_regular_file(work / "flag_out" / "weights.npz"));
  EXPECT_TRUE(fs::is_regular_file(work / "flag.csv")) << "--callback files are relative to the cwd";
  EXPECT_FALSE(fs::exists(jobs / "flag_out"));
  EXPECT_FALSE(fs::exists(jobs / "flag.csv"));
}

// --- 14. fit writes the final weights, as model.save after fit -----------------------------------------------------

TEST_F(OutputsTest, FitWritesTheFinalWeightsByDefault) {
  write_text(dir_ / "job.pbtxt", small_job("", R"(outputs { history_dir: "out" })"));
  const Launch fit = run(dir_, {"fit", "job.pbtxt"}, Watch::kPlain);
  ASSERT_EQ(fit.exit_code, 0) << describe(fit);
  ASSERT_TRUE(fs::is_regular_file(dir_ / "out" / "weights.npz")) << describe(fit);
  const Launch evaluate = run(
      dir_, {"evaluate", "job.pbtxt", "--weights", "out/weights.npz", "--x", "x.npy", "--y", "y.npy"}, Watch::kPlain);
  EXPECT_EQ(evaluate.exit_code, 0) << describe(evaluate);
  EXPECT_NE(evaluate.out.find("24 samples - loss: "), std::string::npos) << describe(evaluate);

  // An empty outputs.export_weights asks for none.
  write_text(dir_ / "none.pbtxt", small_job("", R"(outputs { history_dir: "none" export_weights: "" })"));
  const Launch without = run(dir_, {"fit", "none.pbtxt"}, Watch::kPlain);
  ASSERT_EQ(without.exit_code, 0) << describe(without);
  EXPECT_TRUE(fs::is_regular_file(dir_ / "none" / "history.json"));
  EXPECT_FALSE(fs::exists(dir_ / "none" / "weights.npz"));
}

}  // namespace
