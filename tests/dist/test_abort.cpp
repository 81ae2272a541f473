// Ends-the-job tests, run from outside MPI: starts tests/dist/abort_probe.cpp under mpirun and checks that a failure
// on one rank ends every rank within seconds, non-zero, with the error printed once naming its rank. Not an MPI test.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

#ifndef SHARDFIT_MPIEXEC
#define SHARDFIT_MPIEXEC "mpirun"
#endif
#ifndef SHARDFIT_PROBE_EXECUTABLE
#define SHARDFIT_PROBE_EXECUTABLE "abort_probe"
#endif

namespace {

constexpr double kLimitSeconds = 20.0;  // the job must be over well before this
constexpr double kKillSeconds = 60.0;   // the test itself never waits longer than this

struct Launch {
  int exit_code = -1;  // mpirun's exit status, or 128 + signal
  bool timed_out = false;
  double seconds = 0.0;
  double end_ns = 0.0;  // wall clock at exit, to compare with the probe's own timestamps
  std::string out;
  std::string err;
};

std::string env_or(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

std::string read_and_remove(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::remove(path.c_str());
  return text.str();
}

std::string temp_path(const char* tag) {
  std::string path = "/tmp/shardfit_abort_" + std::string(tag) + "_XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd >= 0) close(fd);
  return path;
}

// Runs the probe under mpirun in its own process group, stdout and stderr to files, killed after kKillSeconds.
Launch launch_probe(int ranks, const std::string& mode) {
  const std::vector<std::string> args = {env_or("SHARDFIT_MPIEXEC", SHARDFIT_MPIEXEC),
                                         "--oversubscribe",
                                         "--allow-run-as-root",
                                         "--mca",
                                         "mpi_yield_when_idle",
                                         "1",
                                         "--mca",
                                         "btl",
                                         "self,vader,tcp",
                                         "-x",
                                         "OMP_NUM_THREADS=1",
                                         "-np",
                                         std::to_string(ranks),
                                         env_or("SHARDFIT_PROBE_EXECUTABLE", SHARDFIT_PROBE_EXECUTABLE),
                                         mode};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  Launch result;
  const std::string out_path = temp_path("out");
  const std::string err_path = temp_path("err");
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_TRUNC, 0);
  posix_spawn_file_actions_addopen(&files, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_TRUNC, 0);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);

  const auto start = std::chrono::steady_clock::now();
  pid_t pid = -1;
  const int spawn_error = posix_spawnp(&pid, argv[0], &files, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attributes);
  if (spawn_error != 0) {
    result.err = "cannot start " + args[0] + ": " + std::strerror(spawn_error);
    std::remove(out_path.c_str());
    std::remove(err_path.c_str());
    return result;
  }

  int status = 0;
  for (;;) {
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed > kKillSeconds && !result.timed_out) {
      result.timed_out = true;
      kill(-pid, SIGTERM);  // mpirun forwards it to its ranks
      std::this_thread::sleep_for(std::chrono::seconds(2));
      kill(-pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.end_ns = static_cast<double>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = read_and_remove(out_path);
  result.err = read_and_remove(err_path);
  return result;
}

int count_of(const std::string& text, const std::string& part) {
  int count = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++count;
  return count;
}

std::string describe(const Launch& launch) {
  return "exit " + std::to_string(launch.exit_code) + " after " + std::to_string(launch.seconds) + " s\n--- stdout\n" +
         launch.out + "--- stderr\n" + launch.err;
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

TEST_P(AbortTest, FailureDuringACollectiveEndsEveryRankQuickly) {
  const int ranks = GetParam();
  const Launch launch = launch_probe(ranks, "mid_collective");
  EXPECT_FALSE(launch.timed_out) << describe(launch);
  EXPECT_NE(launch.exit_code, 0) << describe(launch);
  EXPECT_LT(launch.seconds, kLimitSeconds) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error on rank 1"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error on rank 1 ("), 1) << "the message names where it was raised\n"
                                                          << describe(launch);
  EXPECT_NE(launch.err.find("injected failure in the middle of a step\nhint: "), std::string::npos) << describe(launch);
  const double latency = seconds_after_throw(launch);
  std::printf("[abort] %d ranks: job over %.3f s after start, %.3f s after rank 1 threw\n", ranks, launch.seconds,
              latency);
  RecordProperty("seconds_after_throw", std::to_string(latency));
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
