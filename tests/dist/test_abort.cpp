// Ends-the-job tests, run from outside MPI: starts tests/dist/abort_probe.cpp under mpirun and checks that a failure
// on one rank ends every rank within seconds, non-zero, with the error printed once naming its rank. Not an MPI test.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/launch_process.h"

#ifndef SHARDFIT_MPIEXEC
#define SHARDFIT_MPIEXEC "mpirun"
#endif
#ifndef SHARDFIT_PROBE_EXECUTABLE
#define SHARDFIT_PROBE_EXECUTABLE "abort_probe"
#endif

namespace {

constexpr double kLimitSeconds = 20.0;  // the job must be over well before this
constexpr double kKillSeconds = 60.0;   // the test itself never waits longer than this

using shardfit::testing::count_of;
using shardfit::testing::describe;
using shardfit::testing::env_or;
using shardfit::testing::Launch;

// Runs the probe under mpirun with the test flags, killed after kKillSeconds.
Launch launch_probe(int ranks, const std::string& mode) {
  std::vector<std::string> args = {env_or("SHARDFIT_MPIEXEC", SHARDFIT_MPIEXEC)};
  const std::vector<std::string> flags = shardfit::testing::open_mpi_test_flags();
  args.insert(args.end(), flags.begin(), flags.end());
  args.insert(args.end(),
              {"-np", std::to_string(ranks), env_or("SHARDFIT_PROBE_EXECUTABLE", SHARDFIT_PROBE_EXECUTABLE), mode});
  return shardfit::testing::launch_process(args, kKillSeconds);
}

// Seconds from the probe's "rank 1 throws at <ns>" line to mpirun's exit, or -1 when the line did not make it out.
double seconds_after_throw(const Launch& launch) {
  const std::string marker = "rank 1 throws at ";
  const size_t at = launch.out.find(marker);
  if (at == std::string::npos) return -1.0;
  const double thrown_ns = std::atof(launch.out.c_str() + at + marker.size());
  return (launch.end_ns - thrown_ns) * 1e-9;
}

class AbortTest : public ::testing::TestWithParam<int> {};

void expect_quick_end(int ranks, const std::string& mode) {
  const Launch launch = launch_probe(ranks, mode);
  EXPECT_FALSE(launch.timed_out) << describe(launch);
  EXPECT_NE(launch.exit_code, 0) << describe(launch);
  EXPECT_LT(launch.seconds, kLimitSeconds) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error on rank 1"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error on rank 1 ("), 1) << "the message names where it was raised\n"
                                                          << describe(launch);
  EXPECT_NE(launch.err.find("injected failure in the middle of a step\nhint: "), std::string::npos) << describe(launch);
  const double latency = seconds_after_throw(launch);
  std::printf("[abort] %s, %d ranks: job over %.3f s after start, %.3f s after rank 1 threw\n", mode.c_str(), ranks,
              launch.seconds, latency);
  ::testing::Test::RecordProperty(mode == "mid_collective" ? "seconds_after_throw" : "seconds_after_throw_" + mode,
                                  std::to_string(latency));
}

TEST_P(AbortTest, FailureDuringACollectiveEndsEveryRankQuickly) { expect_quick_end(GetParam(), "mid_collective"); }

// With overlap the peers wait on their communication threads and in finish(), and the failing rank's own thread
// sits in an allreduce: GradientReducer::abandon ends the job without unwinding under it (no hang, one message).
TEST_P(AbortTest, FailureMidBackwardWithBucketsInFlightEndsEveryRankQuickly) {
  expect_quick_end(GetParam(), "mid_overlap");
}

// The peers' training threads wait for a layer's sum that their communication threads make (gradient_reducer.h,
// note 13) and rank 1 never joins: the job ends as quickly.
TEST_P(AbortTest, FailureMidBackwardWhileALayersSumIsOnTheThreadEndsEveryRankQuickly) {
  expect_quick_end(GetParam(), "mid_overlap_sum");
}

INSTANTIATE_TEST_SUITE_P(Ranks, AbortTest, ::testing::Values(2, 4));

TEST(AgreedFailureTest, OneFailingRankIsPrintedOnceAndEveryRankExitsNonZero) {
  const Launch launch = launch_probe(2, "agree_one");
  EXPECT_FALSE(launch.timed_out) << describe(launch);
  EXPECT_NE(launch.exit_code, 0) << describe(launch);
  EXPECT_LT(launch.seconds, kLimitSeconds) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error on rank 1 ("), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "cannot open missing.npy"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error on rank 0"), 0) << describe(launch);
  // An agreed failure finalizes MPI on every rank: no MPI_Abort.
  EXPECT_EQ(count_of(launch.err, "MPI_ABORT"), 0) << describe(launch);
}

TEST(AgreedFailureTest, EveryRankFailingIsPrintedOnceForTheLowestRank) {
  const Launch launch = launch_probe(4, "agree_all");
  EXPECT_FALSE(launch.timed_out) << describe(launch);
  EXPECT_NE(launch.exit_code, 0) << describe(launch);
  EXPECT_LT(launch.seconds, kLimitSeconds) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error on rank"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error on rank 0 ("), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "cannot open missing.npy"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "4 of 4 ranks failed"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "MPI_ABORT"), 0) << describe(launch);
}

TEST(RunRanksTest, ExitStatusIsTheMaximumOverRanks) {
  const Launch ok = launch_probe(2, "ok");
  EXPECT_EQ(ok.exit_code, 0) << describe(ok);
  EXPECT_EQ(count_of(ok.err, "error on rank"), 0) << describe(ok);
  const Launch three = launch_probe(2, "exit_status");
  EXPECT_EQ(three.exit_code, 3) << describe(three);
}

}  // namespace
