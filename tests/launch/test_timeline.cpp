// End-to-end tests of --timeline, run from outside MPI: `mpirun -np P shardfit fit|bench ... --timeline FILE`
// writes one Chrome-trace JSON that tests/python/check_timeline.py reads with Python's json module and checks
// against the run: a track per rank with its name, every step of the range with load, forward, backward,
// allreduce, allreduce wait and optimizer in order on every rank, the bucket spans' bytes summing to the gradient,
// validation / checkpoint / history / plot spans on rank 0, no partial overlap on any track, clock offsets recorded
// (and within their bound of 0 on one host), bucket spans that overlap across ranks (aligned clocks), times within
// the run's wall time. Bad flags fail on every rank with one message. The digits job, a few epochs: ~1 s a launch.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/cli_fixture.h"
#include "tests/support/launch_process.h"

namespace {

namespace fs = std::filesystem;
using shardfit::testing::count_of;
using shardfit::testing::describe;
using shardfit::testing::digits_dir;
using shardfit::testing::FreshDirTest;
using shardfit::testing::Launch;
using shardfit::testing::launch_process;
using shardfit::testing::quoted;
using shardfit::testing::read_bytes;
using shardfit::testing::replaced;
using shardfit::testing::source_dir;
using shardfit::testing::Watch;
using shardfit::testing::write_text;

constexpr double kKillSeconds = 60.0;
constexpr const char* kEpochSpans = "validation,checkpoint,history,plot";

class TimelineTest : public FreshDirTest {
 protected:
  TimelineTest() : FreshDirTest("timeline") {}

  void SetUp() override {
    FreshDirTest::SetUp();
    // The bundled digits job (45 steps an epoch of 32 at validation_split 0.2), its data paths made absolute.
    const std::string text = read_bytes(digits_dir() / "mlp.pbtxt");
    ASSERT_FALSE(text.empty()) << digits_dir() / "mlp.pbtxt";
    write_text(dir_ / "job.pbtxt", replaced(replaced(text, "\"x.npy\"", quoted(digits_dir() / "x.npy")), "\"y.npy\"",
                                            quoted(digits_dir() / "y.npy")));
  }

  Launch shardfit(int ranks, const std::vector<std::string>& args, Watch watch = Watch::kPlain) {
    return shardfit::testing::run_mpirun(ranks, dir_, args, watch, kKillSeconds);
  }

  Launch fit(int ranks, const std::vector<std::string>& flags) {
    std::vector<std::string> args = {"fit", "job.pbtxt", "--history", "history", "--verbose", "2"};
    args.insert(args.end(), flags.begin(), flags.end());
    return shardfit(ranks, args);
  }

  // check_timeline.py on dir_/file: "ok: ..." or the first problem.
  void expect_timeline(const std::string& file, int ranks, const std::string& steps, const std::string& epoch_spans,
                       double wall_seconds) {
    const Launch check =
        launch_process({"/usr/bin/python3", (source_dir() / "tests" / "python" / "check_timeline.py").string(),
                        (dir_ / file).string(), "--ranks", std::to_string(ranks), "--steps", steps, "--epoch-spans",
                        epoch_spans, "--wall-seconds", std::to_string(wall_seconds)},
                       kKillSeconds);
    EXPECT_EQ(check.exit_code, 0) << describe(check);
    EXPECT_EQ(check.out.rfind("ok: " + std::to_string(ranks) + " rank(s)", 0), 0U) << describe(check);
  }

  // The failure contract (cli_fixture.h): every rank exits non-zero, the message printed once; returns it.
  std::string expect_refused(int ranks, const std::vector<std::string>& args) {
    return shardfit::testing::expect_failure_on_every_rank(shardfit(ranks, args, Watch::kEachRankReports), ranks);
  }
};

TEST_F(TimelineTest, FitAtTwoRanksRecordsTheFirst200StepsByDefault) {
  const Launch launch = fit(2, {"--epochs", "5", "--timeline", "out/timeline.json"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  EXPECT_EQ(count_of(launch.out,
                     "timeline: 200 step(s) of --timeline-steps 1:200 -> " + (dir_ / "out" / "timeline.json").string()),
            1)
      << describe(launch);
  expect_timeline("out/timeline.json", 2, "1:200", kEpochSpans, launch.seconds);
}

TEST_F(TimelineTest, FitAtFourRanksRecordsAStepRangeAcrossAnEpochEnd) {
  // Steps 40-50: the end of epoch 1 (validation, history, plot, checkpoint) and the start of epoch 2.
  const Launch launch = fit(4, {"--epochs", "2", "--timeline", "t.json", "--timeline-steps", "40:50"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "timeline: 11 step(s) of --timeline-steps 40:50"), 1) << describe(launch);
  expect_timeline("t.json", 4, "40:50", kEpochSpans, launch.seconds);
}

// With --overlap on the buckets are reduced by the communication thread during backward; its clock reads reach the
// timeline through the training thread, and the file passes the same checks (each bucket a blocking allreduce).
TEST_F(TimelineTest, FitWithOverlapAtTwoRanksPassesTheSameChecks) {
  const Launch launch =
      fit(2, {"--epochs", "1", "--overlap", "on", "--timeline", "t.json", "--timeline-steps", "1:20"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  expect_timeline("t.json", 2, "1:20", kEpochSpans, launch.seconds);
}

TEST_F(TimelineTest, FitAtOneRankHasNoBuckets) {
  const Launch launch = fit(1, {"--epochs", "1", "--timeline", "t.json", "--timeline-steps", "1:10"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  expect_timeline("t.json", 1, "1:10", kEpochSpans, launch.seconds);
}

TEST_F(TimelineTest, BenchAtTwoRanksRecordsItsWarmUpAndMeasuredSteps) {
  const Launch launch = shardfit(2, {"bench", "--model", "mlp", "--batch-size", "32", "--warmup-steps", "2", "--steps",
                                     "3", "--timeline", "bench.json"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "timeline         5 step(s) of --timeline-steps 1:200"), 1) << describe(launch);
  expect_timeline("bench.json", 2, "1:5", "", launch.seconds);
}

// Decided: a range the run never reaches is not an error (a resumed run may start past it); the file holds the
// ranks' tracks and no span, and the run says so.
TEST_F(TimelineTest, ARangeTheRunNeverReachesGivesTheTracksOnly) {
  const Launch launch = fit(2, {"--epochs", "1", "--timeline", "t.json", "--timeline-steps", "1000:2000"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "timeline: no step of --timeline-steps 1000:2000 ran in this run"), 1)
      << describe(launch);
  expect_timeline("t.json", 2, "0:0", "", launch.seconds);
}

TEST_F(TimelineTest, BadTimelineFlagsAreRefusedWithOneMessage) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  write_text(dir_ / "job.json", read_bytes(dir_ / "job.pbtxt"));  // a job file a timeline could be mistaken for
  fs::create_directories(dir_ / "folder.json");
  const std::vector<Case> cases = {
      {{"fit", "job.pbtxt", "--timeline", "t.txt"}, "--timeline t.txt: expected a file ending in .json"},
      {{"fit", "job.pbtxt", "--timeline", ""}, "--timeline needs a file"},
      {{"fit", "job.pbtxt", "--timeline", "t.json", "--timeline-steps", "7"},
       "--timeline-steps 7: expected FIRST:LAST, global step numbers from 1"},
      {{"fit", "job.pbtxt", "--timeline", "t.json", "--timeline-steps", "0:5"}, "--timeline-steps 0:5: expected "},
      {{"fit", "job.pbtxt", "--timeline", "t.json", "--timeline-steps", "9:3"}, ": LAST is below FIRST"},
      {{"fit", "job.pbtxt", "--timeline-steps", "1:5"}, "--timeline-steps needs --timeline FILE.json"},
      {{"fit", "job.json", "--timeline", "job.json"}, "is the input the job file"},
      {{"fit", "job.pbtxt", "--history", "h", "--timeline", "h/history.json"},
       "two outputs would overwrite each other"},
      {{"fit", "job.pbtxt", "--timeline", "folder.json"}, "is a folder: expected a file path"},
      {{"bench", "--model", "mlp", "--timeline", "missing/t.json"}, "the folder '" + (dir_ / "missing").string()},
      {{"bench", "--model", "mlp", "--json", "r.json", "--timeline", "r.json"}, "is the --json records file"},
      {{"bench", "job.json", "--timeline", "job.json"}, "is the job file"},
  };
  for (const Case& c : cases) {
    const std::string message = expect_refused(2, c.args);
    EXPECT_NE(message.find(c.says), std::string::npos) << "expected '" << c.says << "' in\n" << message;
  }
  EXPECT_FALSE(fs::exists(dir_ / "missing"));
  EXPECT_FALSE(fs::exists(dir_ / "t.json"));
}

TEST_F(TimelineTest, HelpListsTheFlags) {
  const Launch launch = shardfit(1, {"--help"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  // bench's usage line and its flags, and fit's flags.
  EXPECT_EQ(count_of(launch.out, "--timeline FILE.json"), 3) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "--timeline-steps A:B"), 3) << describe(launch);
}

}  // namespace
