// Checkpoint / resume end to end, from outside MPI: a job killed with SIGKILL mid-epoch, or stopped with SIGTERM /
// SIGUSR1, then resumed ends bit for bit where the uninterrupted job ends; checkpoint and history files read back
// whole after a kill at any moment; a resume of a changed job is refused; a resume on another rank count ends
// where the uninterrupted job ends up to summation order. Not an MPI test itself.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dist/io/checkpoint_file.h"
#include "kernels/error.h"
#include "proto/shardfit.pb.h"
#include "tests/support/background_run.h"
#include "tests/support/cli_fixture.h"
#include "tests/support/history_series.h"
#include "tests/support/launch_process.h"

namespace {

namespace fs = std::filesystem;
using shardfit::testing::BackgroundRun;
using shardfit::testing::count_of;
using shardfit::testing::describe;
using shardfit::testing::FreshDirTest;
using shardfit::testing::Launch;
using shardfit::testing::make_temp_dir;
using shardfit::testing::mpirun_command;
using shardfit::testing::read_bytes;
using shardfit::testing::relative_difference;
using shardfit::testing::series_or_nan;
using shardfit::testing::source_dir;
using shardfit::testing::write_text;
using Clock = std::chrono::steady_clock;

constexpr double kKillSeconds = 60.0;  // no launch is waited for longer than this
constexpr double kWaitSeconds = 30.0;  // for a checkpoint to appear; far beyond what a loaded 2-core machine needs

// --- the jobs ------------------------------------------------------------------------------------------------------

// The bundled digits data (1797 x 64, 10 classes) through a 64-512-256-10 MLP with dropout: large enough that a
// checkpoint (2 MB with Adam's slots) takes real time to write, and dropout makes the masks' step numbering matter.
constexpr int64_t kParams = (64 * 512 + 512) + (512 * 256 + 256) + (256 * 10 + 10);

struct JobShape {
  int64_t epochs;
  int64_t batch_size;
  int64_t checkpoint_every_steps;    // 0: epoch ends only
  int64_t hidden = 512;              // the first Dense layer's units: changing it changes the job's fingerprint
  const char* batch_norm = nullptr;  // a batch_normalization { ... } after the first Dense layer, with these fields
};

std::string job_text(const JobShape& shape) {
  std::ostringstream x, y;  // a path streams as a quoted string
  x << source_dir() / "examples" / "digits" / "x.npy";
  y << source_dir() / "examples" / "digits" / "y.npy";
  std::ostringstream job;
  job << "model {\n"
      << "  layers { dense { units: " << shape.hidden << " activation: \"relu\" } }\n";
  if (shape.batch_norm != nullptr) job << "  layers { batch_normalization { " << shape.batch_norm << " } }\n";
  job << "  layers { dropout { rate: 0.2 } }\n"
      << "  layers { dense { units: 256 activation: \"relu\" } }\n"
      << "  layers { dense { units: 10 activation: \"softmax\" } }\n"
      << "}\n"
      << "loss: \"sparse_categorical_crossentropy\"\n"
      << "metrics: \"accuracy\"\n"
      << "optimizer { adam { learning_rate: 0.001 } }\n"
      << "fit { epochs: " << shape.epochs << " batch_size: " << shape.batch_size << " validation_split: 0.2 seed: 7 }\n"
      << "data { train { x { path: " << x.str() << " } y { path: " << y.str() << " } } }\n"
      << "outputs { history_dir: \"history\" export_weights: \"w.npz\"";
  if (shape.checkpoint_every_steps > 0) job << " checkpoint_every_steps: " << shape.checkpoint_every_steps;
  job << " }\n";
  return job.str();
}

// Interrupted and resumed: 5 epochs of 180 steps (batch 8), a checkpoint every 20 steps and at each epoch end.
// About 1-5 s on 2 ranks here, depending on what else the machine runs.
constexpr JobShape kResumeJob{5, 8, 20};
// Killed again and again: a checkpoint after every step, 23 steps per epoch (so history files are rewritten
// often too); far more epochs than the test lets it run.
constexpr JobShape kTornJob{1000, 64, 1};
// Resumed on other rank counts: 3 epochs of 45 steps (batch 32), a checkpoint every 5 steps. Runs on 1, 2 and 3
// ranks agree to about 2e-8 in every epoch's loss and val_loss here; kResumeJob's batches of 8 over 5 epochs
// amplify the rounding: its fifth val_loss differs by 1e-3 between plain runs on 1 and 2 ranks.
constexpr JobShape kRerankedJob{3, 32, 5};
// Refusals: quick, with checkpoints at epoch ends only.
constexpr JobShape kSmallJob{2, 64, 0};

// --- processes -----------------------------------------------------------------------------------------------------

// A run waited for to its end.
Launch run_to_end(int ranks, const fs::path& wdir, const std::vector<std::string>& args) {
  return shardfit::testing::launch_process(mpirun_command(ranks, wdir, args), kKillSeconds);
}

// --- checkpoints ---------------------------------------------------------------------------------------------------

// Which version of a file is there: a rename puts a new inode (and a new mtime) in place.
struct FileStamp {
  bool exists = false;
  ino_t inode = 0;
  int64_t mtime_ns = 0;
  off_t bytes = 0;
  bool operator==(const FileStamp&) const = default;
};

FileStamp stamp_of(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return {};
  return {true, info.st_ino, static_cast<int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec,
          info.st_size};
}

// Parses checkpoint.pb and verifies its checksum; a failure is a test failure (a torn or foreign file where a
// checkpoint should be).
std::optional<shardfit::proto::Checkpoint> read_checkpoint(const fs::path& path) {
  const std::string bytes = read_bytes(path);
  try {
    return shardfit::decode_checkpoint(bytes, path);
  } catch (const shardfit::Error& e) {
    ADD_FAILURE() << path << " (" << bytes.size() << " bytes) is not a valid checkpoint: " << e.what();
    return std::nullopt;
  }
}

fs::path checkpoint_path(const fs::path& dir) { return dir / "history" / "checkpoints" / "checkpoint.pb"; }

// Waits until `run` has replaced the checkpoint it found at start (`since`) with one inside an epoch (when
// mid_epoch) and returns it; nullopt when the run ended first.
std::optional<shardfit::proto::Checkpoint> wait_for_new_checkpoint(BackgroundRun& run, const fs::path& path,
                                                                   FileStamp since, bool mid_epoch) {
  while (!run.exited()) {
    const FileStamp now = stamp_of(path);
    if (now.exists && !(now == since)) {
      since = now;
      auto checkpoint = read_checkpoint(path);
      if (!checkpoint) return std::nullopt;
      if (!mid_epoch || checkpoint->step_in_epoch() > 0) return checkpoint;
    }
    if (run.seconds() > kWaitSeconds) {
      ADD_FAILURE() << "no new checkpoint in " << path << " after " << kWaitSeconds << " s";
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return std::nullopt;
}

// What a checkpoint must hold whatever moment it was written at.
void expect_whole_checkpoint(const shardfit::proto::Checkpoint& checkpoint, int ranks, int64_t steps_per_epoch) {
  EXPECT_EQ(checkpoint.parameters_size(), kParams);
  EXPECT_EQ(checkpoint.optimizer().kind(), "adam");
  ASSERT_EQ(checkpoint.optimizer().slots_size(), 2);
  for (const auto& slot : checkpoint.optimizer().slots()) EXPECT_EQ(slot.values_size(), kParams) << slot.name();
  EXPECT_EQ(checkpoint.world_size(), ranks);
  EXPECT_EQ(checkpoint.rank_epoch_sums_size(), 3 * ranks) << "loss, accuracy, count per rank";
  EXPECT_FALSE(checkpoint.job_fingerprint().empty());
  EXPECT_GE(checkpoint.step_in_epoch(), 0);
  EXPECT_LE(checkpoint.step_in_epoch(), steps_per_epoch);
  EXPECT_EQ(checkpoint.global_step(), checkpoint.epoch() * steps_per_epoch + checkpoint.step_in_epoch());
  EXPECT_EQ(checkpoint.history().epochs_size(), checkpoint.epoch()) << "one history record per completed epoch";
}

// "stopped by signal after epoch E step S" / "resuming from ...: epoch E, step S": (E, S), or (-1, -1).
std::pair<int64_t, int64_t> printed_position(const std::string& out, const std::string& pattern) {
  std::smatch match;
  if (!std::regex_search(out, match, std::regex(pattern))) return {-1, -1};
  return {std::stoll(match[1]), std::stoll(match[2])};
}
constexpr const char* kStoppedAt = R"(stopped by signal after epoch (\d+) step (\d+): checkpoint written to )";
constexpr const char* kResumingAt = R"(resuming from \S+: epoch (\d+), step (\d+))";

// --- results -------------------------------------------------------------------------------------------------------

shardfit::proto::History read_history(const fs::path& path) {
  shardfit::proto::History history;
  const std::string bytes = read_bytes(path);
  EXPECT_TRUE(!bytes.empty() && history.ParseFromString(bytes)) << path << " is not a valid History";
  return history;
}

// Field by field, doubles exactly, but NaN equal to NaN: an undetermined verdict has best_val_loss NaN.
bool same_message(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  google::protobuf::util::DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differencer;
  differencer.set_field_comparator(&comparator);
  return differencer.Compare(a, b);
}

// Interrupted or not, a run must leave the same weights, the same history values and the same diagnosis. Epoch
// seconds and samples per second measure the machine, not the training, and may differ.
// got_overlap: whether the run in got_dir overlapped its allreduce (run.json's params say so; the reference did not).
void expect_same_result(const fs::path& want_dir, const fs::path& got_dir, bool got_overlap = false) {
  const std::string want_weights = read_bytes(want_dir / "w.npz");
  ASSERT_FALSE(want_weights.empty()) << want_dir / "w.npz";
  EXPECT_TRUE(read_bytes(got_dir / "w.npz") == want_weights) << "w.npz differs from the uninterrupted run's";
  EXPECT_EQ(read_bytes(got_dir / "history" / "history.csv"), read_bytes(want_dir / "history" / "history.csv"));

  const auto want = read_history(want_dir / "history" / "history.pb");
  const auto got = read_history(got_dir / "history" / "history.pb");
  ASSERT_EQ(got.epochs_size(), want.epochs_size());
  for (int i = 0; i < want.epochs_size(); ++i) {
    const auto& w = want.epochs(i);
    const auto& g = got.epochs(i);
    EXPECT_EQ(g.epoch(), w.epoch());
    EXPECT_EQ(g.values_size(), w.values_size()) << "epoch " << i;
    for (const auto& [key, value] : w.values()) {
      const auto found = g.values().find(key);
      ASSERT_NE(found, g.values().end()) << key << " in epoch " << i;
      // Bit for bit: the doubles' patterns, so even a NaN would have to match.
      EXPECT_EQ(std::bit_cast<uint64_t>(found->second), std::bit_cast<uint64_t>(value))
          << key << " in epoch " << i << ": " << found->second << " vs " << value;
    }
  }
  EXPECT_TRUE(same_message(got.diagnosis(), want.diagnosis()))
      << "diagnosis\n got: " << got.diagnosis().ShortDebugString() << "\nwant: " << want.diagnosis().ShortDebugString();
  EXPECT_EQ(got.params().overlap(), got_overlap);
  auto got_params = got.params();
  got_params.set_overlap(want.params().overlap());  // the one setting that may differ: checked just above
  EXPECT_TRUE(same_message(got_params, want.params()))
      << "params\n got: " << got.params().ShortDebugString() << "\nwant: " << want.params().ShortDebugString();
}

// --- the fixture ---------------------------------------------------------------------------------------------------

// Each test works in a fresh folder (kept when the test failed). The uninterrupted reference runs are made once
// per process and rank count and shared by the tests.
class ResumeTest : public FreshDirTest {
 protected:
  ResumeTest() : FreshDirTest("resume") {}

  static void SetUpTestSuite() {
#ifdef __linux__
    // Killed ranks outlive a killed mpirun for a moment; as their subreaper this process can reap them, so no
    // zombie is left behind whatever reaps orphans in a container.
    prctl(PR_SET_CHILD_SUBREAPER, 1);
#endif
    const char* seed_text = std::getenv("SHARDFIT_RESUME_SEED");
    const uint32_t seed =
        seed_text != nullptr ? static_cast<uint32_t>(std::strtoul(seed_text, nullptr, 10)) : std::random_device{}();
    std::printf("[resume] random kill moments from seed %u (SHARDFIT_RESUME_SEED=%u repeats them)\n", seed, seed);
    random_ = std::mt19937(seed);
  }
  static void TearDownTestSuite() {
    for (const auto& [ranks, dir] : references_) {
      if (keep_references_) {
        std::printf("[resume] reference on %d rank(s) kept in %s\n", ranks, dir.c_str());
      } else {
        fs::remove_all(dir);
      }
    }
    references_.clear();
  }

  void TearDown() override {
    if (HasFailure()) keep_references_ = true;  // to compare with what the failed test left
    FreshDirTest::TearDown();
  }

  // A folder of its own under the test's, holding the job file.
  fs::path job_dir(const std::string& name, const JobShape& shape) const {
    const fs::path dir = dir_ / name;
    fs::create_directories(dir);
    write_text(dir / "job.pbtxt", job_text(shape));
    return dir;
  }

  // The uninterrupted run of kResumeJob on `ranks` ranks: its folder.
  static fs::path reference(int ranks) {
    if (references_.count(ranks) != 0) return references_[ranks];
    const fs::path dir = make_temp_dir("resume_reference");
    write_text(dir / "job.pbtxt", job_text(kResumeJob));
    const Launch launch = run_to_end(ranks, dir, {"fit", "job.pbtxt"});
    EXPECT_EQ(launch.exit_code, 0) << describe(launch);
    std::printf("[resume] reference, %d rank(s): %.2f s\n", ranks, launch.seconds);
    references_[ranks] = dir;
    return dir;
  }

  // A moment somewhere within the next steps (one takes 1-5 ms here): the kill lands mid-epoch, after work
  // that the resumed run must redo exactly.
  static std::chrono::microseconds random_delay(int max_ms) {
    return std::chrono::microseconds(std::uniform_int_distribution<int>(0, max_ms * 1000)(random_));
  }

  static inline std::map<int, fs::path> references_;
  static inline bool keep_references_ = false;
  static inline std::mt19937 random_;
};

class ResumeOnRanks : public ResumeTest, public ::testing::WithParamInterface<int> {};

// --- 1. SIGKILL mid-epoch, resumed, bit for bit ----------------------------------------------------------------------

TEST_P(ResumeOnRanks, KilledMidEpochAndResumedEndsBitForBitLikeTheUninterruptedRun) {
  const int ranks = GetParam();
  const fs::path want = reference(ranks);
  const fs::path dir = job_dir("killed", kResumeJob);
  const fs::path checkpoint = checkpoint_path(dir);
  const auto start = Clock::now();

  constexpr int kKills = 3;
  int kills = 0;
  for (int attempt = 0; attempt < kKills; ++attempt) {
    SCOPED_TRACE("attempt " + std::to_string(attempt));
    const FileStamp before = stamp_of(checkpoint);
    std::vector<std::string> args = {"fit", "job.pbtxt"};
    std::optional<std::pair<int64_t, int64_t>> resumed_from;  // (epoch, step) as the resumed run prints them
    if (attempt > 0) {
      args.push_back("--resume");
      const auto saved = read_checkpoint(checkpoint);
      ASSERT_TRUE(saved);
      resumed_from = {saved->epoch() + 1, saved->step_in_epoch()};
    }
    BackgroundRun run(mpirun_command(ranks, dir, args), kKillSeconds);
    // After this run's first checkpoint inside an epoch, so the resume continues from partial epoch sums.
    if (!wait_for_new_checkpoint(run, checkpoint, before, true)) break;
    std::this_thread::sleep_for(random_delay(40));
    ASSERT_EQ(static_cast<int>(run.ranks().size()), ranks) << "every rank is still training";
    run.kill_everything();
    ++kills;

    const auto saved = read_checkpoint(checkpoint);
    ASSERT_TRUE(saved);
    expect_whole_checkpoint(*saved, ranks, 180);
    std::printf("[resume] %d rank(s): SIGKILL %d after %.2f s; last checkpoint at epoch %lld step %lld\n", ranks, kills,
                run.seconds(), static_cast<long long>(saved->epoch() + 1),
                static_cast<long long>(saved->step_in_epoch()));
    if (resumed_from) {
      EXPECT_EQ(printed_position(run.result().out, kResumingAt), *resumed_from) << describe(run.result());
    }
  }
  EXPECT_EQ(kills, kKills) << "the job ended before it could be killed " << kKills << " times";

  const auto saved = read_checkpoint(checkpoint);
  ASSERT_TRUE(saved);
  const Launch resumed = run_to_end(ranks, dir, {"fit", "job.pbtxt", "--resume"});
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  EXPECT_EQ(printed_position(resumed.out, kResumingAt), std::make_pair(saved->epoch() + 1, saved->step_in_epoch()))
      << describe(resumed);
  std::printf("[resume] %d rank(s): %d kills and the resumed run: %.2f s in all\n", ranks, kills,
              std::chrono::duration<double>(Clock::now() - start).count());
  expect_same_result(want, dir);

  // A requeued job may be resumed once more after it finished: nothing left to train, the same results again.
  const Launch again = run_to_end(ranks, dir, {"fit", "job.pbtxt", "--resume"});
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_EQ(printed_position(again.out, kResumingAt), std::make_pair(kResumeJob.epochs + 1, int64_t{0}))
      << describe(again);
  EXPECT_EQ(count_of(again.out, "Epoch "), 0) << "no epoch runs again\n" << describe(again);
  expect_same_result(want, dir);
}

// --- 1b. The same with the allreduce overlapping backward (--overlap on): killed, resumed, and bit for bit what the
// uninterrupted run WITHOUT overlap ends with (overlap sums the same buckets with the same calls) ---------------------

TEST_P(ResumeOnRanks, WithOverlapKilledAndResumedEndsBitForBitLikeTheRunWithout) {
  const int ranks = GetParam();
  const fs::path want = reference(ranks);
  const fs::path dir = job_dir("killed_overlap", kResumeJob);
  const fs::path checkpoint = checkpoint_path(dir);
  {
    BackgroundRun run(mpirun_command(ranks, dir, {"fit", "job.pbtxt", "--overlap", "on"}), kKillSeconds);
    ASSERT_TRUE(wait_for_new_checkpoint(run, checkpoint, stamp_of(checkpoint), true));
    std::this_thread::sleep_for(random_delay(40));
    run.kill_everything();
  }
  const auto saved = read_checkpoint(checkpoint);
  ASSERT_TRUE(saved);
  const Launch resumed = run_to_end(ranks, dir, {"fit", "job.pbtxt", "--resume", "--overlap", "on"});
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  EXPECT_EQ(printed_position(resumed.out, kResumingAt), std::make_pair(saved->epoch() + 1, saved->step_in_epoch()))
      << describe(resumed);
  expect_same_result(want, dir, true);
}

// --- 1c. BatchNormalization: its moving statistics ride in the checkpoint's parameters; killed mid-epoch and
// resumed, bit for bit, with synchronized statistics and per replica (averaged across ranks before each checkpoint,
// dist/cross_replica_comm.h) -----------------------------------------------------------------------------------------

TEST_F(ResumeTest, WithBatchNormalizationKilledMidEpochAndResumedEndsBitForBit) {
  constexpr int kRanks = 2;
  for (const char* fields : {"", "synchronized: false"}) {
    SCOPED_TRACE(std::string("batch_normalization { ") + fields + " }");
    const JobShape shape{3, 8, 20, 512, fields};
    const std::string name = fields[0] == '\0' ? "synchronized" : "per_replica";
    const fs::path want = job_dir(name + "_reference", shape);
    const Launch reference = run_to_end(kRanks, want, {"fit", "job.pbtxt"});
    ASSERT_EQ(reference.exit_code, 0) << describe(reference);

    const fs::path dir = job_dir(name, shape);
    const fs::path checkpoint = checkpoint_path(dir);
    {
      BackgroundRun run(mpirun_command(kRanks, dir, {"fit", "job.pbtxt"}), kKillSeconds);
      ASSERT_TRUE(wait_for_new_checkpoint(run, checkpoint, stamp_of(checkpoint), true));
      std::this_thread::sleep_for(random_delay(40));
      run.kill_everything();
    }
    const auto saved = read_checkpoint(checkpoint);
    ASSERT_TRUE(saved);
    // The parameters are every weight: the trainable ones and the 2 x 512 moving statistics.
    EXPECT_EQ(saved->parameters_size(), kParams + 4 * 512);
    const Launch resumed = run_to_end(kRanks, dir, {"fit", "job.pbtxt", "--resume"});
    ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
    EXPECT_EQ(printed_position(resumed.out, kResumingAt), std::make_pair(saved->epoch() + 1, saved->step_in_epoch()))
        << describe(resumed);
    expect_same_result(want, dir);
  }
}

// --- 2. SIGINT, SIGTERM, SIGUSR1: alone, to the ranks, to mpirun: checkpoint, exit 75, resumed bit for bit --------

// What reaches the ranks, and what mpirun does:
//  1. shardfit takes SIGINT (Ctrl-C), SIGTERM and SIGUSR1 alike: every rank finishes its step, rank 0 writes a
//     checkpoint and prints one line naming the signal, every rank exits 75. Run alone (no mpirun), that is the
//     whole story, for Ctrl-C at the terminal (SIGINT to the foreground process group) too.
//  2. SLURM (a time limit, scancel) sends its signal to every task of the step itself; so does a test here, to the
//     rank processes, never through mpirun.
//  3. Open MPI 4.1's mpirun does not forward SIGTERM or SIGINT: it forwards SIGUSR1, SIGUSR2, SIGTSTP, SIGCONT,
//     SIGABRT and SIGALRM (ess_base_forward_signals), and refuses SIGTERM and SIGINT even when that parameter names
//     them. It takes SIGTERM and SIGINT (Ctrl-C) as "abort the job": SIGCONT to the ranks at once, SIGTERM after
//     odls_base_sigkill_timeout (1 s), SIGKILL a second later, and exit status 1 whatever the ranks did (measured
//     with Open MPI 4.1.4). So `kill <mpirun>` may still leave a checkpoint, if the ranks write it within that
//     second, but never reports 75; launch/mpirun_local.sh turns the first SIGINT / SIGTERM into SIGUSR1 for
//     mpirun (test 2b), and a job script signals the ranks or sends mpirun SIGUSR1.
//  4. SIGUSR1 sent to mpirun is forwarded to every rank as SIGUSR1.
//  5. After a rank exits non-zero (75 included) mpirun takes its abort path and returns about 2 s later, even
//     when every rank has already exited: most of these tests' time.
// A signal that reaches one rank only is agreed at the next step (fit.cpp, design note 2): one case sends it so.
enum class StopBy {
  kCtrlCAlone,  // no mpirun: SIGINT to the process group, as a terminal sends it
  kSigtermAlone,
  kSigusr1Alone,
  kSigtermToEveryRank,
  kSigtermToLastRank,
  kSigintToEveryRank,
  kSigusr1ToMpirun
};

struct Stop {
  StopBy how;
  const char* name;
  const char* signal_named;  // what the stop line says in its parentheses
};

bool runs_alone(StopBy how) {
  return how == StopBy::kCtrlCAlone || how == StopBy::kSigtermAlone || how == StopBy::kSigusr1Alone;
}

// shardfit without mpirun, working in `dir`, with the thread count the mpirun runs get (so results are identical).
std::vector<std::string> alone_command(const fs::path& dir, const std::vector<std::string>& args) {
  std::vector<std::string> command = {"/bin/sh", "-c",         R"(cd "$1" && shift && OMP_NUM_THREADS=1 exec "$@")",
                                      "sh",      dir.string(), shardfit::testing::shardfit_bin()};
  command.insert(command.end(), args.begin(), args.end());
  return command;
}

TEST_P(ResumeOnRanks, StoppedBySignalWritesACheckpointExits75AndResumesBitForBit) {
  const int ranks = GetParam();
  const fs::path want = reference(ranks);
  const fs::path dir = job_dir("stopped", kResumeJob);
  const fs::path checkpoint = checkpoint_path(dir);
  const auto start = Clock::now();

  std::vector<Stop> stops;
  if (ranks == 1) {
    stops = {{StopBy::kCtrlCAlone, "Ctrl-C, alone", "SIGINT"},
             {StopBy::kSigtermAlone, "SIGTERM, alone", "SIGTERM"},
             {StopBy::kSigusr1Alone, "SIGUSR1, alone", "SIGUSR1"},
             {StopBy::kSigtermToEveryRank, "SIGTERM to every rank", "SIGTERM"},
             {StopBy::kSigusr1ToMpirun, "SIGUSR1 to mpirun", "SIGUSR1"}};
  } else {
    stops = {{StopBy::kSigtermToEveryRank, "SIGTERM to every rank", "SIGTERM"},
             {StopBy::kSigtermToLastRank, "SIGTERM to the last rank only", "a signal"},
             {StopBy::kSigintToEveryRank, "SIGINT to every rank", "SIGINT"},
             {StopBy::kSigusr1ToMpirun, "SIGUSR1 to mpirun", "SIGUSR1"}};
  }
  bool first = true;
  for (const auto& [stop, name, signal_named] : stops) {
    SCOPED_TRACE(name);
    const FileStamp before = stamp_of(checkpoint);
    std::vector<std::string> args = {"fit", "job.pbtxt"};
    if (!first) args.push_back("--resume");
    first = false;
    BackgroundRun run(runs_alone(stop) ? alone_command(dir, args) : mpirun_command(ranks, dir, args), kKillSeconds);
    // Handlers are installed before training starts; a new checkpoint proves this run is training.
    ASSERT_TRUE(wait_for_new_checkpoint(run, checkpoint, before, false)) << describe(run.wait());
    std::this_thread::sleep_for(random_delay(40));
    if (stop == StopBy::kCtrlCAlone) {
      run.signal_group(SIGINT);
    } else if (stop == StopBy::kSigtermAlone || stop == StopBy::kSigusr1Alone) {
      run.signal_mpirun(stop == StopBy::kSigtermAlone ? SIGTERM : SIGUSR1);  // the process started is shardfit
    } else if (stop == StopBy::kSigusr1ToMpirun) {
      run.signal_mpirun(SIGUSR1);
    } else {
      const std::map<int, pid_t> rank_pids = run.ranks();
      ASSERT_EQ(static_cast<int>(rank_pids.size()), ranks);
      for (const auto& [rank, pid] : rank_pids) {
        if (stop != StopBy::kSigtermToLastRank || rank == ranks - 1) {
          kill(pid, stop == StopBy::kSigintToEveryRank ? SIGINT : SIGTERM);
        }
      }
    }
    const Launch stopped = run.wait();
    EXPECT_EQ(stopped.exit_code, 75) << "mpirun reports the ranks' status\n" << describe(stopped);
    EXPECT_EQ(count_of(stopped.out, "checkpoint written"), 1) << describe(stopped);
    EXPECT_EQ(count_of(stopped.out, std::string("(") + signal_named + "; exit 75, continue with --resume)\n"), 1)
        << describe(stopped);
    EXPECT_EQ(count_of(stopped.out + stopped.err, "error"), 0) << describe(stopped);
    const auto saved = read_checkpoint(checkpoint);
    ASSERT_TRUE(saved);
    expect_whole_checkpoint(*saved, ranks, 180);
    // The checkpoint on disk is the one the stop wrote, at the step it names.
    EXPECT_EQ(printed_position(stopped.out, kStoppedAt), std::make_pair(saved->epoch() + 1, saved->step_in_epoch()))
        << describe(stopped);
    std::printf("[resume] %d rank(s): %-30s stopped after %.2f s at epoch %lld step %lld\n", ranks, name,
                stopped.seconds, static_cast<long long>(saved->epoch() + 1),
                static_cast<long long>(saved->step_in_epoch()));
  }

  const auto saved = read_checkpoint(checkpoint);
  ASSERT_TRUE(saved);
  const Launch resumed = run_to_end(ranks, dir, {"fit", "job.pbtxt", "--resume"});
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  EXPECT_EQ(printed_position(resumed.out, kResumingAt), std::make_pair(saved->epoch() + 1, saved->step_in_epoch()))
      << describe(resumed);
  std::printf("[resume] %d rank(s): %zu stops and the resumed run: %.2f s in all\n", ranks, stops.size(),
              std::chrono::duration<double>(Clock::now() - start).count());
  expect_same_result(want, dir);
}

INSTANTIATE_TEST_SUITE_P(Ranks, ResumeOnRanks, ::testing::Values(1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "_ranks"; });

// --- 2b. Ctrl-C and SIGTERM at mpirun: Open MPI aborts the job; launch/mpirun_local.sh stops it with exit 75 -------

// A job long enough never to end by itself during the test: 100 epochs, a checkpoint every 20 steps.
constexpr JobShape kLongJob{100, 8, 20};

// launch/mpirun_local.sh RANKS fit job.pbtxt, working in `dir`, with the binary under test.
std::vector<std::string> launch_script_command(const fs::path& dir, int ranks) {
  return {"/bin/sh",
          "-c",
          R"(cd "$1" && SHARDFIT_BIN="$2" exec bash "$3" "$4" fit job.pbtxt)",
          "sh",
          dir.string(),
          shardfit::testing::shardfit_bin(),
          (source_dir() / "launch" / "mpirun_local.sh").string(),
          std::to_string(ranks)};
}

TEST_F(ResumeTest, CtrlCAtMpirunAbortsButTheLaunchScriptStopsWithACheckpointAndExit75) {
  constexpr int kRanks = 2;
  struct Case {
    const char* name;
    bool script;        // through launch/mpirun_local.sh, else mpirun itself
    int signal_number;  // Ctrl-C: to the process group started; otherwise to the process started alone
    int exit_code;
  };
  const std::vector<Case> cases = {
      // Open MPI's abort: the ranks get SIGTERM a second later (and may still write a checkpoint), mpirun says 1.
      {"Ctrl-C at plain mpirun", false, SIGINT, 1},
      {"SIGTERM to plain mpirun", false, SIGTERM, 1},
      {"Ctrl-C at launch/mpirun_local.sh", true, SIGINT, 75},
      {"SIGTERM to launch/mpirun_local.sh", true, SIGTERM, 75},
      {"SIGUSR1 to launch/mpirun_local.sh", true, SIGUSR1, 75},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path dir =
        job_dir(std::string(c.script ? "script_" : "mpirun_") + std::to_string(c.signal_number), kLongJob);
    const fs::path checkpoint = checkpoint_path(dir);
    BackgroundRun run(c.script ? launch_script_command(dir, kRanks) : mpirun_command(kRanks, dir, {"fit", "job.pbtxt"}),
                      kKillSeconds);
    ASSERT_TRUE(wait_for_new_checkpoint(run, checkpoint, {}, false)) << describe(run.wait());
    std::this_thread::sleep_for(random_delay(40));
    if (c.signal_number == SIGINT) {
      run.signal_group(SIGINT);
    } else {
      run.signal_mpirun(c.signal_number);  // the script's own process
    }
    const Launch stopped = run.wait();
    EXPECT_FALSE(stopped.timed_out) << describe(stopped);
    EXPECT_EQ(stopped.exit_code, c.exit_code) << describe(stopped);
    const auto saved = read_checkpoint(checkpoint);  // whatever happened, the checkpoint on disk is whole
    ASSERT_TRUE(saved);
    expect_whole_checkpoint(*saved, kRanks, 180);
    if (c.script) {
      // The script asked mpirun to forward SIGUSR1: one stop line, at the checkpoint on disk.
      EXPECT_EQ(count_of(stopped.out, "(SIGUSR1; exit 75, continue with --resume)\n"), 1) << describe(stopped);
      EXPECT_EQ(printed_position(stopped.out, kStoppedAt), std::make_pair(saved->epoch() + 1, saved->step_in_epoch()))
          << describe(stopped);
      EXPECT_EQ(count_of(stopped.err, "stopping after this step with a checkpoint (exit 75)"),
                c.signal_number == SIGUSR1 ? 0 : 1)  // SIGUSR1 is passed on without a word
          << describe(stopped);
    }
    std::printf("[resume] %s: exit %d after %.2f s, checkpoint at epoch %lld step %lld\n", c.name, stopped.exit_code,
                stopped.seconds, static_cast<long long>(saved->epoch() + 1),
                static_cast<long long>(saved->step_in_epoch()));
  }
}

// A person who will not wait presses Ctrl-C again: the process ends at once with Ctrl-C's own status (130), and the
// checkpoint on disk is a whole one (the last written, or the stop's own if it was done in time).
TEST_F(ResumeTest, SecondCtrlCEndsAtOnceAndLeavesAWholeCheckpoint) {
  const fs::path dir = job_dir("twice", kLongJob);
  const fs::path checkpoint = checkpoint_path(dir);
  BackgroundRun run(alone_command(dir, {"fit", "job.pbtxt"}), kKillSeconds);
  ASSERT_TRUE(wait_for_new_checkpoint(run, checkpoint, {}, false)) << describe(run.wait());
  std::this_thread::sleep_for(random_delay(40));
  run.signal_group(SIGINT);
  // Two signals sent back to back merge into one while the first is pending, as no person types them: the second
  // goes once the first has been handled, which shows in /proc as SIGINT no longer caught (the handler is reset).
  const std::string status_path = "/proc/" + std::to_string(run.pid()) + "/status";
  const auto sigint_caught = [&] {
    std::istringstream lines(read_bytes(status_path));
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("SigCgt:", 0) == 0) return ((std::stoull(line.substr(7), nullptr, 16) >> (SIGINT - 1)) & 1) != 0;
    }
    return false;  // the process is gone
  };
  while (sigint_caught() && !run.exited() && run.seconds() < kWaitSeconds) std::this_thread::yield();
  run.signal_group(SIGINT);
  const Launch stopped = run.wait();
  EXPECT_EQ(stopped.exit_code, 130) << describe(stopped);
  const auto saved = read_checkpoint(checkpoint);
  ASSERT_TRUE(saved);
  expect_whole_checkpoint(*saved, 1, 180);
  std::printf("[resume] Ctrl-C twice, alone: exit %d after %.2f s\n", stopped.exit_code, stopped.seconds);
}

// Ctrl-C twice at launch/mpirun_local.sh, the second one a person's moment later (0, 0.3 or 0.8 s: before, while and
// after the ranks stop). The script never passes the second one to mpirun, which Open MPI 4.1 answers with a
// segfault when it is already ending the job (exit 139 and a backtrace): it kills the ranks and exits 130, or keeps
// the job's 75 when the ranks had stopped already. Either way the checkpoint on disk is whole.
TEST_F(ResumeTest, SecondCtrlCAtTheLaunchScriptAbortsWithoutCrashingMpirun) {
  constexpr int kRanks = 2;
  for (const int gap_ms : {0, 300, 800}) {
    SCOPED_TRACE("second Ctrl-C after " + std::to_string(gap_ms) + " ms");
    const fs::path dir = job_dir("script_twice_" + std::to_string(gap_ms), kLongJob);
    const fs::path checkpoint = checkpoint_path(dir);
    BackgroundRun run(launch_script_command(dir, kRanks), kKillSeconds);
    ASSERT_TRUE(wait_for_new_checkpoint(run, checkpoint, {}, false)) << describe(run.wait());
    run.signal_group(SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
    run.signal_group(SIGINT);
    const Launch stopped = run.wait();
    EXPECT_FALSE(stopped.timed_out) << describe(stopped);
    EXPECT_TRUE(stopped.exit_code == 130 || stopped.exit_code == 75) << describe(stopped);
    EXPECT_EQ(count_of(stopped.out + stopped.err, "Segmentation fault"), 0) << describe(stopped);
    const auto saved = read_checkpoint(checkpoint);
    ASSERT_TRUE(saved);
    expect_whole_checkpoint(*saved, kRanks, 180);
    std::printf("[resume] Ctrl-C twice at the launch script, %d ms apart: exit %d after %.2f s\n", gap_ms,
                stopped.exit_code, stopped.seconds);
  }
}

// --- 3. a kill at any moment leaves whole files ---------------------------------------------------------------------

// Reads every snapshot folder's history.json and history.csv as a Python user would, and prints per folder the
// epochs each holds ("INDEX JSON CSV", -1 for a missing file). Any file that does not parse fails the script.
constexpr const char* kReadSnapshots = R"(
import csv, json, os, sys
for index, folder in enumerate(sys.argv[1:]):
    counts = []
    path = os.path.join(folder, "history.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
        # Keras's history.history: every value a list, one entry per epoch.
        assert all(isinstance(values, list) for values in history.values()), path
        lengths = {len(values) for values in history.values()}
        assert len(lengths) <= 1, (path, lengths)
        counts.append(lengths.pop() if lengths else 0)
    else:
        counts.append(-1)
    path = os.path.join(folder, "history.csv")
    if os.path.exists(path):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert rows and rows[0][0] == "epoch", path
        for row in rows[1:]:
            assert len(row) == len(rows[0]), (path, row)
            [float(field) for field in row if field]
        counts.append(len(rows) - 1)
    else:
        counts.append(-1)
    print(index, *counts)
)";

int count_temporary_files(const fs::path& dir) {
  int count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.path().filename().string().find(".tmp.") != std::string::npos) ++count;
  }
  return count;
}

TEST_F(ResumeTest, KillsAtRandomMomentsLeaveOnlyWholeCheckpointAndHistoryFiles) {
  constexpr int kRanks = 2;
  constexpr int kKills = 20;
  constexpr int64_t kSteps = 23;  // ceil(1437 / 64)
  const fs::path dir = job_dir("torn", kTornJob);
  const fs::path history_dir = dir / "history";
  const fs::path checkpoint = checkpoint_path(dir);
  const auto start = Clock::now();

  std::vector<std::string> snapshots;      // history.json / .csv as each kill left them, read by Python at the end
  std::vector<int64_t> pb_epochs;          // history.pb's epoch count after each kill (-1: none yet)
  std::vector<int64_t> checkpoint_epochs;  // the checkpoint's completed epochs after each kill
  int inside_a_write = 0;                  // kills that left a temporary file: they interrupted a write
  for (int kill = 0; kill < kKills; ++kill) {
    SCOPED_TRACE("kill " + std::to_string(kill));
    const FileStamp before = stamp_of(checkpoint);
    std::vector<std::string> args = {"fit", "job.pbtxt"};
    if (kill > 0) args.push_back("--resume");  // every checkpoint a kill left must also be one shardfit resumes from
    BackgroundRun run(mpirun_command(kRanks, dir, args), kKillSeconds);
    ASSERT_TRUE(wait_for_new_checkpoint(run, checkpoint, before, false)) << describe(run.wait());
    const int temporary_before = count_temporary_files(history_dir);
    std::this_thread::sleep_for(random_delay(30));
    run.kill_everything();
    if (count_temporary_files(history_dir) > temporary_before) ++inside_a_write;

    const auto saved = read_checkpoint(checkpoint);
    ASSERT_TRUE(saved);
    expect_whole_checkpoint(*saved, kRanks, kSteps);
    checkpoint_epochs.push_back(saved->epoch());

    pb_epochs.push_back(-1);
    if (fs::exists(history_dir / "history.pb")) {
      const auto history = read_history(history_dir / "history.pb");
      for (int i = 0; i < history.epochs_size(); ++i) EXPECT_EQ(history.epochs(i).epoch(), i);
      pb_epochs.back() = history.epochs_size();
    }
    if (fs::exists(history_dir / "loss.svg")) {
      const std::string svg = read_bytes(history_dir / "loss.svg");
      EXPECT_NE(svg.find("</svg>", svg.size() > 16 ? svg.size() - 16 : 0), std::string::npos) << "loss.svg is cut";
    }
    const fs::path snapshot = dir / "snapshots" / std::to_string(kill);
    fs::create_directories(snapshot);
    for (const char* name : {"history.json", "history.csv"}) {
      if (fs::exists(history_dir / name)) fs::copy_file(history_dir / name, snapshot / name);
    }
    snapshots.push_back(snapshot.string());
  }

  std::vector<std::string> python = {"/usr/bin/python3", "-c", kReadSnapshots};
  python.insert(python.end(), snapshots.begin(), snapshots.end());
  const Launch read = shardfit::testing::launch_process(python, kKillSeconds);
  ASSERT_EQ(read.exit_code, 0) << "a history.json or history.csv did not parse\n" << describe(read);
  std::istringstream lines(read.out);
  int checked = 0;
  for (int64_t index, json, csv; lines >> index >> json >> csv; ++checked) {
    SCOPED_TRACE("kill " + std::to_string(index));
    const int64_t pb = pb_epochs.at(static_cast<size_t>(index));
    const int64_t epochs = checkpoint_epochs.at(static_cast<size_t>(index));
    if (pb < 0) {  // nothing written yet: no file at all, or a kill between the first renames
      EXPECT_LE(csv, 0);
      continue;
    }
    // The files are written json, pb, csv, each replaced whole: a kill between two renames leaves the later ones
    // one epoch behind, never more, and never ahead. The checkpoint at the epoch's end follows the history, so
    // the history holds the checkpoint's epochs, or one more when the kill came between the two.
    // A csv not there yet (-1) holds no epochs: the very first write can be killed between two renames too.
    const int64_t csv_epochs = std::max<int64_t>(csv, 0);
    EXPECT_TRUE(json >= pb && pb >= csv_epochs && csv_epochs >= json - 1)
        << "json " << json << ", pb " << pb << ", csv " << csv;
    EXPECT_TRUE(json == epochs || json == epochs + 1) << "json " << json << ", checkpoint " << epochs;
  }
  EXPECT_EQ(checked, kKills) << read.out;

  // The chain of kills ends like any run: resume and finish the epoch in progress.
  const auto saved = read_checkpoint(checkpoint);
  ASSERT_TRUE(saved);
  const int64_t epochs = saved->epoch() + 1;
  const Launch finished = run_to_end(kRanks, dir, {"fit", "job.pbtxt", "--resume", "--epochs", std::to_string(epochs)});
  ASSERT_EQ(finished.exit_code, 0) << describe(finished);
  EXPECT_EQ(read_history(history_dir / "history.pb").epochs_size(), epochs);
  std::printf(
      "[resume] %d SIGKILLs at random moments, %d inside a write, every file whole; %lld epochs done: "
      "%.2f s in all\n",
      kKills, inside_a_write, static_cast<long long>(epochs),
      std::chrono::duration<double>(Clock::now() - start).count());
}

// --- 4. a resume that could not continue exactly is refused; no checkpoint starts afresh ---------------------------

// The refusal contract: non-zero exit, one message naming the problem and the fix, and nothing overwritten.
void expect_refusal(const Launch& launch, const std::vector<std::string>& named, const fs::path& dir,
                    const std::map<std::string, std::string>& files_before) {
  EXPECT_FALSE(launch.timed_out) << describe(launch);
  EXPECT_NE(launch.exit_code, 0) << describe(launch);
  EXPECT_EQ(count_of(launch.out + launch.err, "error on rank"), 1) << describe(launch);
  for (const std::string& part : named)
    EXPECT_NE(launch.err.find(part), std::string::npos) << part << "\n" << describe(launch);
  for (const auto& [name, bytes] : files_before) EXPECT_TRUE(read_bytes(dir / name) == bytes) << name << " changed";
}

std::map<std::string, std::string> outputs_of(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const char* name : {"history/checkpoints/checkpoint.pb", "history/history.pb", "history/history.json",
                           "history/history.csv", "w.npz"}) {
    files[name] = read_bytes(dir / name);
  }
  return files;
}

TEST_F(ResumeTest, ResumeRefusesAChangedJob) {
  const fs::path dir = job_dir("changed", kSmallJob);
  const Launch first = run_to_end(2, dir, {"fit", "job.pbtxt"});
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const auto before = outputs_of(dir);
  JobShape wider = kSmallJob;
  wider.hidden = 128;
  write_text(dir / "wider.pbtxt", job_text(wider));
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"another model", {"fit", "wider.pbtxt", "--resume"}},
      {"another batch size", {"fit", "job.pbtxt", "--resume", "--batch-size", "32"}},
      {"another seed", {"fit", "job.pbtxt", "--resume", "--seed", "8"}},
  };
  for (const auto& [name, args] : cases) {
    SCOPED_TRACE(name);
    const Launch refused = run_to_end(2, dir, args);
    expect_refusal(refused, {"belongs to a different job", "delete the checkpoint directory to start afresh"}, dir,
                   before);
  }
}

TEST_F(ResumeTest, ResumeWithoutACheckpointStartsAfreshAndSaysSo) {
  const fs::path fresh = job_dir("fresh", kSmallJob);
  const fs::path plain = job_dir("plain", kSmallJob);
  const Launch resumed = run_to_end(2, fresh, {"fit", "job.pbtxt", "--resume"});
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  // The job's relative checkpoint folder, resolved against the job file's folder.
  EXPECT_EQ(count_of(resumed.out,
                     "no checkpoint in " + (fresh / "history" / "checkpoints").string() + ": starting from epoch 1\n"),
            1)
      << describe(resumed);
  EXPECT_EQ(count_of(resumed.out, "resuming from"), 0) << describe(resumed);
  const Launch first = run_to_end(2, plain, {"fit", "job.pbtxt"});
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  EXPECT_EQ(count_of(first.out, "checkpoint"), 0) << "a plain run does not talk about checkpoints\n" << describe(first);
  expect_same_result(plain, fresh);
}

// --- 5. resumed on another rank count: the same global batch, the same losses up to summation order ---------------

// The line a resume of kRerankedJob on another rank count prints once.
std::string reranked_line(int saved_ranks, int ranks) {
  return "resuming a " + std::to_string(saved_ranks) + "-rank checkpoint on " + std::to_string(ranks) +
         (ranks == 1 ? " rank" : " ranks") + ": the same global batch (" + std::to_string(kRerankedJob.batch_size) +
         "), so the same arithmetic up to summation order (bit for bit only on " + std::to_string(saved_ranks) +
         (saved_ranks == 1 ? " rank)\n" : " ranks)\n");
}

// A requeued SLURM job may land on another node count. 2 ranks stopped inside an epoch, resumed on 3 and stopped
// again in the same epoch (so its checkpoint holds sums that were redistributed once already), then resumed on 1
// rank to the end: per-epoch losses within the P-ranks tolerance of the uninterrupted 2-rank run, and each change
// of rank count said once. (Not the weights: Adam's step m / sqrt(v) turns rounding into steps of the learning
// rate's size in weights whose gradients are tiny, so plain runs on 1, 2 and 3 ranks already differ by 7e-5 in
// them, while their losses agree to 2e-8.)
TEST_F(ResumeTest, ResumedOnAnotherRankCountEndsLikeTheUninterruptedRunUpToSummationOrder) {
  constexpr int64_t kSteps = 45;  // ceil(1437 / 32)
  const fs::path want = job_dir("uninterrupted", kRerankedJob);
  const Launch reference_run = run_to_end(2, want, {"fit", "job.pbtxt"});
  ASSERT_EQ(reference_run.exit_code, 0) << describe(reference_run);
  const fs::path dir = job_dir("reranked", kRerankedJob);
  const fs::path checkpoint = checkpoint_path(dir);
  const auto start = Clock::now();

  int previous_ranks = 0;
  std::optional<shardfit::proto::Checkpoint> first_stop;
  for (const int ranks : {2, 3}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    const FileStamp before = stamp_of(checkpoint);
    std::vector<std::string> args = {"fit", "job.pbtxt"};
    if (previous_ranks > 0) args.push_back("--resume");
    BackgroundRun run(mpirun_command(ranks, dir, args), kKillSeconds);
    // Stopped right after its first checkpoint inside an epoch, 5 steps or fewer after the last stop, so both stops
    // land early in the first epoch.
    ASSERT_TRUE(wait_for_new_checkpoint(run, checkpoint, before, true)) << describe(run.wait());
    run.signal_mpirun(SIGUSR1);
    const Launch stopped = run.wait();
    ASSERT_EQ(stopped.exit_code, 75) << describe(stopped);
    const auto saved = read_checkpoint(checkpoint);
    ASSERT_TRUE(saved);
    expect_whole_checkpoint(*saved, ranks, kSteps);
    EXPECT_EQ(printed_position(stopped.out, kStoppedAt), std::make_pair(saved->epoch() + 1, saved->step_in_epoch()))
        << describe(stopped);
    EXPECT_LT(saved->step_in_epoch(), kSteps) << "stopped inside the epoch";
    if (previous_ranks == 0) {
      EXPECT_EQ(count_of(stopped.out, "-rank checkpoint on"), 0) << describe(stopped);
      first_stop = saved;
    } else {
      EXPECT_EQ(count_of(stopped.out, reranked_line(previous_ranks, ranks)), 1) << describe(stopped);
      EXPECT_EQ(count_of(stopped.out, "-rank checkpoint on"), 1) << describe(stopped);
      EXPECT_EQ(saved->epoch(), first_stop->epoch()) << "the 3 ranks stopped in the epoch they resumed";
      EXPECT_GT(saved->step_in_epoch(), first_stop->step_in_epoch());
    }
    std::printf("[resume] %d rank(s): stopped after %.2f s at epoch %lld step %lld\n", ranks, stopped.seconds,
                static_cast<long long>(saved->epoch() + 1), static_cast<long long>(saved->step_in_epoch()));
    previous_ranks = ranks;
  }

  const auto saved = read_checkpoint(checkpoint);
  ASSERT_TRUE(saved);
  const Launch resumed = run_to_end(1, dir, {"fit", "job.pbtxt", "--resume"});
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  EXPECT_EQ(printed_position(resumed.out, kResumingAt), std::make_pair(saved->epoch() + 1, saved->step_in_epoch()))
      << describe(resumed);
  EXPECT_EQ(count_of(resumed.out, reranked_line(3, 1)), 1) << describe(resumed);
  EXPECT_EQ(count_of(resumed.out, "-rank checkpoint on"), 1) << describe(resumed);
  EXPECT_EQ(count_of(resumed.out + resumed.err, "error"), 0) << describe(resumed);

  const auto want_history = read_history(want / "history" / "history.pb");
  const auto got_history = read_history(dir / "history" / "history.pb");
  ASSERT_EQ(got_history.epochs_size(), kRerankedJob.epochs);
  ASSERT_EQ(want_history.epochs_size(), kRerankedJob.epochs);
  for (const char* key : {"loss", "val_loss"}) {
    const double difference = relative_difference(series_or_nan(got_history, key), series_or_nan(want_history, key));
    EXPECT_LE(difference, 1e-5) << key << " differs from the uninterrupted 2-rank run's";
    std::printf("[resume] 2 -> 3 -> 1 ranks against 2 ranks throughout: relative difference of %s %.2e\n", key,
                difference);
  }
  std::printf("[resume] 2 -> 3 -> 1 ranks: %.2f s in all\n",
              std::chrono::duration<double>(Clock::now() - start).count());

  // Resumed again on the rank count that wrote the checkpoint: no word about rank counts.
  const Launch again = run_to_end(1, dir, {"fit", "job.pbtxt", "--resume"});
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_EQ(count_of(again.out, "-rank checkpoint on"), 0) << describe(again);
}

// A finished run requeued on another rank count: nothing left to train, so the same weights and history values
// (the history's params are the last run's), and the change said once.
TEST_F(ResumeTest, AFinishedRunResumedOnAnotherRankCountTrainsNothingAndSaysSo) {
  const fs::path dir = job_dir("ranks", kSmallJob);
  const Launch first = run_to_end(2, dir, {"fit", "job.pbtxt"});
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const auto before = outputs_of(dir);
  for (const int ranks : {1, 3}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    const Launch resumed = run_to_end(ranks, dir, {"fit", "job.pbtxt", "--resume"});
    ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
    EXPECT_EQ(count_of(resumed.out, "resuming a 2-rank checkpoint on " + std::to_string(ranks) + " rank"), 1)
        << describe(resumed);
    EXPECT_EQ(count_of(resumed.out, "Epoch "), 0) << "no epoch runs again\n" << describe(resumed);
    for (const char* name : {"history/checkpoints/checkpoint.pb", "history/history.csv", "w.npz"}) {
      EXPECT_TRUE(read_bytes(dir / name) == before.at(name)) << name << " changed";
    }
    EXPECT_EQ(read_history(dir / "history" / "history.pb").params().world_size(), ranks);
  }
}

}  // namespace
