// evaluate / predict / plot never replace a file they read, and a bad output path is refused before anything is
// computed: the data (--x, --y, the job's data.test), the --weights file, the job file and the history files are
// byte-for-byte unchanged, every rank exits 1 with one message naming the flag and the path, and nothing is written.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/cli_fixture.h"
#include "tests/support/launch_process.h"

namespace {

namespace fs = std::filesystem;
using shardfit::testing::count_of;
using shardfit::testing::describe;
using shardfit::testing::digits_dir;
using shardfit::testing::error_message;
using shardfit::testing::FreshDirTest;
using shardfit::testing::Launch;
using shardfit::testing::make_temp_dir;
using shardfit::testing::quoted;
using shardfit::testing::rank_statuses;
using shardfit::testing::read_bytes;
using shardfit::testing::Watch;
using shardfit::testing::write_text;

constexpr double kLimitSeconds = shardfit::testing::kFailureLimitSeconds;  // a refused command is over before
constexpr double kKillSeconds = 60.0;
constexpr int kRanks = 2;

Launch shardfit(int ranks, const fs::path& wdir, const std::vector<std::string>& args, Watch watch) {
  return shardfit::testing::run_mpirun(ranks, wdir, args, watch, kKillSeconds);
}

// The digits job reading its test set from x.npy / y.npy beside the job file (relative paths).
std::string test_set_job() {
  std::string text = read_bytes(digits_dir() / "mlp.pbtxt");
  EXPECT_FALSE(text.empty()) << digits_dir() / "mlp.pbtxt";
  return shardfit::testing::replaced(text, "data {\n",
                                     "data {\n  test { x { path: \"x.npy\" } y { path: \"y.npy\" } }\n");
}

// One short fit for the whole suite: its weights.npz and history files, copied into each test's folder (so that a
// failing check destroys only a copy).
class InferenceOutputTest : public FreshDirTest {
 protected:
  InferenceOutputTest() : FreshDirTest("inference_outputs") {}

  static void TearDownTestSuite() {
    if (!model_dir_.empty() && ::testing::UnitTest::GetInstance()->failed_test_count() == 0) {
      fs::remove_all(model_dir_);
    }
    model_dir_.clear();
    fit_.reset();
  }

  // dir_ gets job.pbtxt, x.npy, y.npy, w.npz and history/ (history.json, run.json, history.csv, history.pb).
  void SetUp() override {
    FreshDirTest::SetUp();
    if (!fit_) {
      model_dir_ = make_temp_dir("inference_outputs_model");
      ASSERT_FALSE(model_dir_.empty());
      fs::copy_file(digits_dir() / "x.npy", model_dir_ / "x.npy");
      fs::copy_file(digits_dir() / "y.npy", model_dir_ / "y.npy");
      write_text(model_dir_ / "job.pbtxt", test_set_job());
      fit_ = std::make_unique<Launch>(
          shardfit(1, model_dir_, {"fit", "job.pbtxt", "--epochs", "2", "--history", "history", "--verbose", "0"},
                   Watch::kPlain));
    }
    ASSERT_EQ(fit_->exit_code, 0) << describe(*fit_);
    for (const char* name : {"job.pbtxt", "x.npy", "y.npy"}) fs::copy_file(model_dir_ / name, dir_ / name);
    fs::copy_file(model_dir_ / "history" / "weights.npz", dir_ / "w.npz");
    fs::create_directory(dir_ / "history");
    for (const char* name : {"history.json", "run.json", "history.csv", "history.pb"}) {
      ASSERT_TRUE(fs::is_regular_file(model_dir_ / "history" / name)) << name << "\n" << describe(*fit_);
      fs::copy_file(model_dir_ / "history" / name, dir_ / "history" / name);
    }
  }

  void TearDown() override {
    shardfit::testing::release_read_only_folder(immutable_);
    if (fs::exists(dir_ / "ro")) fs::permissions(dir_ / "ro", fs::perms::owner_all);
    FreshDirTest::TearDown();
  }

  // dir_/ro, a folder no process can write (make_read_only_folder); empty when this file system cannot make one.
  fs::path read_only_folder() { return shardfit::testing::make_read_only_folder(dir_ / "ro", immutable_); }

  // Every regular file under dir_ (relative path -> bytes).
  std::map<std::string, std::string> snapshot() const {
    std::map<std::string, std::string> files;
    for (const auto& entry : fs::recursive_directory_iterator(dir_)) {
      if (entry.is_regular_file()) files[fs::relative(entry.path(), dir_).string()] = read_bytes(entry.path());
    }
    return files;
  }

  // Runs `shardfit args` on kRanks ranks in dir_ and checks the refusal: every rank exits 1 within seconds, one
  // message naming each of `named`, no temporary file in it (the check comes before any writing), and no file
  // under dir_ created, changed or removed. Returns the message.
  std::string expect_refused(const std::vector<std::string>& args, const std::vector<std::string>& named) {
    std::string command = "shardfit";
    for (const auto& arg : args) command += " " + arg;
    SCOPED_TRACE(command);
    const auto before = snapshot();
    const Launch launch = shardfit(kRanks, dir_, args, Watch::kEachRankReports);
    const std::string message = shardfit::testing::expect_failure_on_every_rank(launch, kRanks, kLimitSeconds, 1);
    for (const auto& part : named) EXPECT_NE(message.find(part), std::string::npos) << part << "\n" << message;
    EXPECT_EQ(message.find(".tmp."), std::string::npos) << message;
    const auto after = snapshot();
    for (const auto& [name, bytes] : before) {
      const auto found = after.find(name);
      EXPECT_TRUE(found != after.end() && found->second == bytes) << name << " was removed or changed";
    }
    for (const auto& [name, bytes] : after) EXPECT_EQ(before.count(name), 1u) << name << " was created";
    return message;
  }

  fs::path immutable_;
  static fs::path model_dir_;
  static std::unique_ptr<Launch> fit_;
};

fs::path InferenceOutputTest::model_dir_;
std::unique_ptr<Launch> InferenceOutputTest::fit_;

TEST_F(InferenceOutputTest, PredictNeverReplacesAnInput) {
  const std::vector<std::string> predict = {"predict", "job.pbtxt", "--weights", "w.npz"};
  const auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = predict;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_refused(with({"--x", "x.npy", "--output", "x.npy"}), {"--output 'x.npy'", "--x"});
  expect_refused(with({"--x", "x.npy", "--output", "w.npz"}), {"--output 'w.npz'", "--weights"});
  expect_refused(with({"--x", "x.npy", "-o", "job.pbtxt"}), {"-o 'job.pbtxt'", "the job file"});
  // The job's data.test (relative to the job file), another spelling of it, and a hard link to it.
  expect_refused(with({"--output", "x.npy"}), {"--output 'x.npy'", "data.test.x.path"});
  expect_refused(with({"--output", "history/../x.npy"}), {"--output 'history/../x.npy'", "data.test.x.path"});
  fs::create_hard_link(dir_ / "x.npy", dir_ / "same_x.npy");
  expect_refused(with({"--x", "same_x.npy", "--output", "x.npy"}), {"--output 'x.npy'", "--x"});
}

TEST_F(InferenceOutputTest, EvaluateNeverReplacesAnInput) {
  const std::vector<std::string> evaluate = {"evaluate", "job.pbtxt", "--weights", "w.npz"};
  const auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = evaluate;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  expect_refused(with({"--x", "x.npy", "--y", "y.npy", "--output", "y.npy"}), {"--output 'y.npy'", "--y"});
  expect_refused(with({"--output", "y.npy"}), {"--output 'y.npy'", "data.test.y.path"});
  expect_refused(with({"--output", "w.npz"}), {"--output 'w.npz'", "--weights"});
}

// Beyond the files the command reads: every file the job names and every file its fit writes. dir_ gets the digits
// job as mlp.pbtxt (data.train = x.npy / y.npy, history in out/digits) and jt.pbtxt, the same job with a test set
// xt.npy / yt.npy; out/digits holds a run's history files, checkpoint and final weights.
class InferenceOutputJobFilesTest : public InferenceOutputTest {
 protected:
  void SetUp() override {
    InferenceOutputTest::SetUp();
    if (HasFatalFailure()) return;
    const std::string mlp = read_bytes(digits_dir() / "mlp.pbtxt");
    write_text(dir_ / "mlp.pbtxt", mlp);
    write_text(dir_ / "jt.pbtxt",
               shardfit::testing::replaced(mlp, "data {\n",
                                           "data {\n  test { x { path: \"xt.npy\" } y { path: \"yt.npy\" } }\n"));
    for (const char* name : {"xt.npy", "xother.npy"}) fs::copy_file(dir_ / "x.npy", dir_ / name);
    fs::copy_file(dir_ / "y.npy", dir_ / "yt.npy");
    const fs::path run = dir_ / "out" / "digits";
    fs::create_directories(run / "checkpoints");
    for (const char* name : {"history.json", "run.json", "history.csv", "history.pb", "weights.npz"}) {
      ASSERT_TRUE(fs::is_regular_file(model_dir_ / "history" / name)) << name;
      fs::copy_file(model_dir_ / "history" / name, run / name);
    }
    ASSERT_TRUE(fs::is_regular_file(model_dir_ / "history" / "checkpoints" / "checkpoint.pb"));
    fs::copy_file(model_dir_ / "history" / "checkpoints" / "checkpoint.pb", run / "checkpoints" / "checkpoint.pb");
  }
};

TEST_F(InferenceOutputJobFilesTest, PredictNeverReplacesAFileTheJobNames) {
  expect_refused({"predict", "mlp.pbtxt", "--weights", "w.npz", "--x", "x.npy", "--output", "y.npy"},
                 {"--output 'y.npy'", "is the job's data.train.y"});
  expect_refused({"predict", "jt.pbtxt", "--weights", "w.npz", "--x", "xother.npy", "--output", "xt.npy"},
                 {"--output 'xt.npy'", "is the job's data.test.x"});
  // outputs.initial_weights, resolved against the job file's folder like the data.
  fs::create_directory(dir_ / "jobs");
  write_text(dir_ / "jobs" / "init.pbtxt", shardfit::testing::replaced(read_bytes(dir_ / "mlp.pbtxt"), "outputs {",
                                                                       "outputs { initial_weights: \"../w.npz\" "));
  fs::copy_file(dir_ / "w.npz", dir_ / "w2.npz");
  expect_refused({"predict", "jobs/init.pbtxt", "--weights", "w2.npz", "--x", "x.npy", "--output", "w.npz"},
                 {"--output 'w.npz'", "is the job's outputs.initial_weights"});
}

TEST_F(InferenceOutputJobFilesTest, EvaluateNeverReplacesAFileTheJobNames) {
  expect_refused({"evaluate", "jt.pbtxt", "--weights", "w.npz", "--output", "x.npy"},
                 {"--output 'x.npy'", "is the job's data.train.x"});
  expect_refused({"evaluate", "jt.pbtxt", "--weights", "w.npz", "--output", "out/digits/history.json"},
                 {"--output 'out/digits/history.json'", "is the job's history file history.json"});
  expect_refused({"evaluate", "jt.pbtxt", "--weights", "w.npz", "--output", "out/digits/run.json"},
                 {"--output 'out/digits/run.json'", "is the job's history file run.json"});
}

TEST_F(InferenceOutputJobFilesTest, InferenceNeverReplacesTheRunsFiles) {
  expect_refused({"predict", "jt.pbtxt", "--weights", "w.npz", "--output", "out/digits/checkpoints/checkpoint.pb"},
                 {"--output 'out/digits/checkpoints/checkpoint.pb'", "is the job's checkpoint"});
  expect_refused({"predict", "jt.pbtxt", "--weights", "w.npz", "--output", "out/digits/weights.npz"},
                 {"--output 'out/digits/weights.npz'", "is the job's final weights file"});
  expect_refused({"evaluate", "jt.pbtxt", "--weights", "w.npz", "--output", "out/digits/history.csv"},
                 {"--output 'out/digits/history.csv'", "is the job's history file history.csv"});
}

TEST_F(InferenceOutputJobFilesTest, OutputNamesTheFormatWritten) {
  expect_refused({"predict", "jt.pbtxt", "--weights", "w.npz", "--output", "p.csv"}, {"--output 'p.csv'", ".npy"});
  expect_refused({"predict", "jt.pbtxt", "--weights", "w.npz", "--output", "p.json"}, {"--output 'p.json'", ".npy"});
  expect_refused({"evaluate", "jt.pbtxt", "--weights", "w.npz", "--output", "m.npy"}, {"--output 'm.npy'", ".json"});
  expect_refused({"evaluate", "jt.pbtxt", "--weights", "w.npz", "--output", "metrics"},
                 {"--output 'metrics'", ".json"});
  // The names the formats ask for still work, and write what they say.
  const Launch predicted =
      shardfit(kRanks, dir_, {"predict", "jt.pbtxt", "--weights", "w.npz", "--output", "p.npy"}, Watch::kPlain);
  EXPECT_EQ(predicted.exit_code, 0) << describe(predicted);
  EXPECT_EQ(read_bytes(dir_ / "p.npy").substr(0, 6), "\x93NUMPY");
  const Launch evaluated =
      shardfit(kRanks, dir_, {"evaluate", "jt.pbtxt", "--weights", "w.npz", "--output", "m.json"}, Watch::kPlain);
  EXPECT_EQ(evaluated.exit_code, 0) << describe(evaluated);
  EXPECT_NE(read_bytes(dir_ / "m.json").find("\"loss\""), std::string::npos);
}

TEST_F(InferenceOutputTest, PlotNeverReplacesAHistoryFile) {
  for (const char* name : {"history.json", "run.json", "history.csv", "history.pb"}) {
    expect_refused({"plot", "history/history.json", "-o", std::string("history/") + name},
                   {std::string("-o 'history/") + name + "'", name});
  }
  expect_refused({"plot", "history", "--output", "history/history.pb"}, {"--output 'history/history.pb'"});
  // An .svg name that is a link to the history is the history all the same.
  fs::create_symlink("history.json", dir_ / "history" / "linked.svg");
  expect_refused({"plot", "history/history.csv", "-o", "history/linked.svg"},
                 {"-o 'history/linked.svg'", "history.json"});
  // The history still plots afterwards.
  const Launch plot = shardfit(1, dir_, {"plot", "history/history.json", "-o", "loss.svg"}, Watch::kPlain);
  EXPECT_EQ(plot.exit_code, 0) << describe(plot);
  EXPECT_NE(read_bytes(dir_ / "loss.svg").find("<svg"), std::string::npos);
}

TEST_F(InferenceOutputTest, OutputInAMissingFolderIsRefusedBeforeComputing) {
  expect_refused({"plot", "history", "-o", "nodir/loss.svg"}, {"-o 'nodir/loss.svg'", "does not exist"});
  expect_refused({"predict", "job.pbtxt", "--weights", "w.npz", "--output", "nodir/p.npy"},
                 {"--output 'nodir/p.npy'", "does not exist"});
  expect_refused({"evaluate", "job.pbtxt", "--weights", "w.npz", "--output", "nodir/m.json"},
                 {"--output 'nodir/m.json'", "does not exist"});
  expect_refused({"predict", "job.pbtxt", "--weights", "w.npz", "--output", "w.npz/p.npy"},
                 {"--output 'w.npz/p.npy'", "not a folder"});
  expect_refused({"predict", "job.pbtxt", "--weights", "w.npz", "--output", "history"},
                 {"--output 'history'", "is a folder"});
}

TEST_F(InferenceOutputTest, OutputInAnUnwritableFolderIsRefusedBeforeComputing) {
  if (read_only_folder().empty()) GTEST_SKIP() << "cannot make a read-only folder here (chattr +i failed)";
  expect_refused({"plot", "history", "-o", "ro/loss.svg"}, {"-o 'ro/loss.svg'", "cannot write in"});
  expect_refused({"predict", "job.pbtxt", "--weights", "w.npz", "--output", "ro/p.npy"},
                 {"--output 'ro/p.npy'", "cannot write in"});
}

TEST_F(InferenceOutputTest, PlotWritesSvgOnly) {
  expect_refused({"plot", "history", "-o", "loss.png"}, {"-o 'loss.png'", ".svg"});
  expect_refused({"plot", "history", "--output", "loss"}, {"--output 'loss'", ".svg"});
}

TEST_F(InferenceOutputTest, EvaluateWithoutWeightsNamesBothKinds) {
  const std::string message = expect_refused({"evaluate", "job.pbtxt"}, {"--weights"});
  EXPECT_NE(message.find(".npz"), std::string::npos) << message;
  EXPECT_NE(message.find("checkpoint.pb"), std::string::npos) << message;
}

}  // namespace
