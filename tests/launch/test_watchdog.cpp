// The watchdog end to end, from outside MPI: a 2-rank fit with one rank stopped (SIGSTOP) mid-training ends with
// status 70 within the abort threshold plus a few seconds, the other rank naming the phase and the epoch / step it
// waits in, no process left, and the last checkpoint and history files whole. Also: the flags' checks, and a fit
// that progresses prints nothing of the watchdog. Not an MPI test itself.
#include <signal.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dist/io/checkpoint_file.h"
#include "dist/io/history_reader.h"
#include "kernels/error.h"
#include "proto/shardfit.pb.h"
#include "tests/support/background_run.h"
#include "tests/support/cli_fixture.h"

namespace {

namespace fs = std::filesystem;
using shardfit::testing::BackgroundRun;
using shardfit::testing::describe;
using shardfit::testing::digits_dir;
using shardfit::testing::FreshDirTest;
using shardfit::testing::Launch;
using shardfit::testing::mpirun_command;
using shardfit::testing::process_gone;
using shardfit::testing::quoted;
using shardfit::testing::read_bytes;
using shardfit::testing::replaced;
using shardfit::testing::run_mpirun;
using shardfit::testing::Watch;
using shardfit::testing::write_text;

constexpr double kWarnSeconds = 2.0;
constexpr double kAbortSeconds = 4.0;
// From the stop to the end of mpirun: the abort threshold, one look of the monitor, MPI_Abort's teardown (well
// under a second here) or, at worst, the watchdog's own 5 s deadline; with room for a loaded 2-core machine.
constexpr double kEndLimitSeconds = kAbortSeconds + 6.0;
constexpr double kKillSeconds = 60.0;  // no launch is waited for longer than this

// The digits data through a small MLP, 450 steps an epoch (batch 4, ~0.5 s here), a checkpoint at each epoch end,
// far more epochs than the test lets it run.
std::string job_text(int64_t epochs) {
  std::ostringstream job;
  job << "model {\n"
      << "  layers { dense { units: 128 activation: \"relu\" } }\n"
      << "  layers { dense { units: 10 activation: \"softmax\" } }\n"
      << "}\n"
      << "loss: \"sparse_categorical_crossentropy\"\n"
      << "metrics: \"accuracy\"\n"
      << "optimizer { adam { learning_rate: 0.001 } }\n"
      << "fit { epochs: " << epochs << " batch_size: 4 seed: 7 }\n"
      << "data { train { x { path: " << quoted(digits_dir() / "x.npy")
      << " } y { path: " << quoted(digits_dir() / "y.npy") << " } } }\n"
      << "outputs { history_dir: \"history\" export_weights: \"\" }\n";
  return job.str();
}

std::vector<std::string> fit_args(const std::vector<std::string>& more) {
  std::vector<std::string> args = {"fit", "job.pbtxt"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

const std::vector<std::string> kThresholds = {"--watchdog-warn-seconds", "2", "--watchdog-abort-seconds", "4"};

class WatchdogTest : public FreshDirTest {
 protected:
  WatchdogTest() : FreshDirTest("watchdog") {}

  static void SetUpTestSuite() {
#ifdef __linux__
    // A stopped rank is killed by Open MPI's daemon around mpirun's exit; as the subreaper of what this test started,
    // this process reaps it, so no zombie is left behind whatever reaps orphans in a container.
    prctl(PR_SET_CHILD_SUBREAPER, 1);
#endif
  }

  void SetUp() override {
    FreshDirTest::SetUp();
    write_text(dir_ / "job.pbtxt", job_text(1000));
  }

  fs::path history_dir() const { return dir_ / "history"; }

  // Starts the 2-rank fit, waits until the first epoch's history and checkpoint are on disk and a little more (into
  // the second epoch's steps), stops rank `stopped` with SIGSTOP and waits for the job to end. Checks that it ended
  // in time and that no process of it is left.
  Launch stop_a_rank(int stopped, const std::vector<std::string>& more = {}) {
    std::vector<std::string> flags = kThresholds;
    flags.insert(flags.end(), more.begin(), more.end());
    BackgroundRun run(mpirun_command(2, dir_, fit_args(flags)), kKillSeconds);
    const fs::path history = history_dir() / "history.json";
    const fs::path checkpoint = shardfit::checkpoint_path(history_dir() / "checkpoints");
    while (!run.exited() && !(fs::exists(history) && fs::exists(checkpoint)) && run.seconds() < 30.0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    const std::map<int, pid_t> ranks = run.ranks();
    EXPECT_FALSE(run.exited()) << "the fit ended before it could be stopped";
    EXPECT_EQ(ranks.size(), 2U) << "rank processes under mpirun";
    const auto found = ranks.find(stopped);
    if (found == ranks.end() || run.exited()) {
      ADD_FAILURE() << "rank " << stopped << " not found after " << run.seconds() << " s";
      run.kill_everything();
      return run.wait();
    }
    kill(found->second, SIGSTOP);  // ours: a process of the job this test started
    const double stopped_at = run.seconds();
    const Launch result = run.wait();
    EXPECT_FALSE(result.timed_out) << describe(result);
    EXPECT_LT(result.seconds - stopped_at, kEndLimitSeconds) << describe(result);
    std::printf("[watchdog] rank %d stopped after %.1f s; the job ended %.1f s later, status %d\n", stopped, stopped_at,
                result.seconds - stopped_at, result.exit_code);
    // Every rank gone: Open MPI's teardown kills the stopped one too (SIGKILL needs no SIGCONT).
    for (const auto& [rank, pid] : ranks) {
      const auto since = std::chrono::steady_clock::now();
      while (!process_gone(pid) && std::chrono::steady_clock::now() - since < std::chrono::seconds(10)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (!process_gone(pid)) {
        ADD_FAILURE() << "rank " << rank << " (pid " << pid << ") still runs 10 s after mpirun ended";
        kill(pid, SIGKILL);
      }
      waitpid(pid, nullptr, WNOHANG);
    }
    return result;
  }

  // What the watchdog leaves on disk: the last checkpoint and every history file whole (each is replaced
  // atomically, so a job ended at any moment leaves the previous version).
  void expect_whole_files() {
    const fs::path checkpoint_file = shardfit::checkpoint_path(history_dir() / "checkpoints");
    try {
      const auto checkpoint = shardfit::decode_checkpoint(read_bytes(checkpoint_file), checkpoint_file);
      EXPECT_EQ(checkpoint.world_size(), 2);
      EXPECT_GE(checkpoint.epoch(), 1) << "the first epoch's checkpoint, at least";
    } catch (const shardfit::Error& e) {
      ADD_FAILURE() << checkpoint_file << " is not a whole checkpoint: " << e.what();
    }
    for (const char* name : {"history.json", "history.pb", "history.csv"}) {
      try {
        const auto history = shardfit::read_history_any(history_dir() / name);
        EXPECT_GE(history.epochs_size(), 1) << name;
      } catch (const shardfit::Error& e) {
        ADD_FAILURE() << history_dir() / name << " does not read back: " << e.what();
      }
    }
  }
};

// The waiting rank's last words: "rank R: waiting 4.1 s in PHASE of epoch E[, step S]: no progress, the watchdog
// ends the job (exit 70)". Almost always the stop finds the peer inside a step (the gradient allreduce, which also
// carries the per-step control values); a stop during the few milliseconds of an epoch's end finds it in one of that
// end's exchanges, named with its epoch.
void expect_stuck_message(const Launch& result, int waiting_rank) {
  EXPECT_EQ(result.exit_code, 70) << describe(result);
  const std::string rank = std::to_string(waiting_rank);
  const std::regex warning("rank " + rank +
                           R"(: waiting \d+\.\d s in .* of epoch \d+.*\(watchdog: the job ends after )"
                           R"(4\.0 s without progress\))");
  EXPECT_TRUE(std::regex_search(result.err, warning)) << describe(result);
  std::smatch match;
  const std::regex in_step("rank " + rank +
                           R"(: waiting [\d.]+ s in (the gradient allreduce|the wait for the gradient allreduce))"
                           R"( of epoch (\d+), step )"
                           R"((\d+): no progress, the watchdog ends the job \(exit 70\))");
  const std::regex at_epoch_end("rank " + rank +
                                R"(: waiting [\d.]+ s in (the start|the checkpoint|the reduction of the loss and )"
                                R"(metrics at the end|the callbacks' decisions at the end) of epoch (\d+): no )"
                                R"(progress, the watchdog ends the job \(exit 70\))");
  if (std::regex_search(result.err, match, in_step)) {
    EXPECT_GE(std::stoll(match[2]), 2) << "the stop came after the first epoch";
    EXPECT_GE(std::stoll(match[3]), 1);
    EXPECT_LE(std::stoll(match[3]), 450);
  } else {
    ASSERT_TRUE(std::regex_search(result.err, match, at_epoch_end)) << describe(result);
    std::printf("[watchdog] the stop came at an epoch's end: %s\n", match[0].str().c_str());
  }
  EXPECT_NE(result.err.find("hint: a peer rank may be stopped, dead or cut off from the network"), std::string::npos)
      << describe(result);
}

TEST_F(WatchdogTest, AStoppedRankEndsTheJobAndItsPeerSaysWhereItWaits) {
  const Launch result = stop_a_rank(1);
  expect_stuck_message(result, 0);
  expect_whole_files();
}

// With --overlap on the peer of a stopped rank waits for a bucket its communication thread cannot finish: the
// beacon says "the wait for the gradient allreduce" (or the control exchange, as without overlap).
TEST_F(WatchdogTest, WithOverlapAStoppedRankEndsTheJobAndItsPeerSaysWhereItWaits) {
  const Launch result = stop_a_rank(1, {"--overlap", "on"});
  expect_stuck_message(result, 0);
  expect_whole_files();
}

// Rank 0 is the one that writes: stopped, it leaves rank 1 to report, and its files as they were.
TEST_F(WatchdogTest, AStoppedRankZeroIsReportedByTheOtherRank) {
  const Launch result = stop_a_rank(0);
  expect_stuck_message(result, 1);
  expect_whole_files();
}

// A fit that moves on says nothing of the watchdog and ends as before.
TEST_F(WatchdogTest, AProgressingFitPrintsNothingOfTheWatchdog) {
  write_text(dir_ / "job.pbtxt", job_text(2));
  const Launch result = run_mpirun(2, dir_, fit_args(kThresholds), Watch::kPlain, kKillSeconds);
  EXPECT_EQ(result.exit_code, 0) << describe(result);
  EXPECT_EQ(result.err.find("watchdog"), std::string::npos) << describe(result);
  EXPECT_EQ(result.err.find("waiting"), std::string::npos) << describe(result);
  EXPECT_EQ(shardfit::read_history_any(history_dir() / "history.json").epochs_size(), 2);
}

TEST_F(WatchdogTest, ThresholdsAreCheckedBeforeAnythingRuns) {
  const auto refused = [&](const std::vector<std::string>& flags, const std::string& expected) {
    const Launch result = run_mpirun(1, dir_, fit_args(flags), Watch::kPlain, kKillSeconds);
    EXPECT_NE(result.exit_code, 0) << describe(result);
    EXPECT_NE(result.err.find(expected), std::string::npos) << "expected: " << expected << "\n" << describe(result);
    EXPECT_FALSE(fs::exists(history_dir())) << "nothing written";
  };
  refused({"--watchdog-abort-seconds", "-1"}, "--watchdog-abort-seconds -1: expected seconds >= 0 (0 turns it off)");
  refused({"--watchdog-warn-seconds", "30", "--watchdog-abort-seconds", "10"},
          "fit.watchdog_warn_seconds = 30 is not below fit.watchdog_abort_seconds = 10");
  write_text(dir_ / "job.pbtxt", replaced(job_text(2), "fit { ", "fit { watchdog_abort_seconds: -5 "));
  refused({}, "fit.watchdog_abort_seconds = -5: expected seconds >= 0 (0: never end the job)");
}

}  // namespace
