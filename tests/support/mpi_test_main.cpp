// The one GoogleTest main for MPI tests: builds the Comm, runs the same tests on every rank, and fails the run on
// every rank if any rank failed. Not a launcher: mpirun starts the ranks (tests/mpi_tests.cmake).
//
// Design:
//  1. Output: rank 0 prints the usual gtest output; other ranks print only their failures, prefixed "[rank R]",
//     so a failure on any rank is visible without 4x the noise.
//  2. After each test the ranks exchange pass/fail on a private communicator (a duplicate, so this exchange can
//     never match a collective of the test itself); rank 0 marks the test failed when another rank failed it, and
//     every rank's exit status is the maximum over ranks.
//  3. Hangs: a test that returns early on one rank (ASSERT_*, an exception) while its peers wait in a collective
//     would block forever. A watchdog thread ends the process when one test runs longer than
//     SHARDFIT_TEST_TIMEOUT_S (default 60 s), naming the test; mpirun then ends the other ranks. The watchdog makes
//     no MPI call (MPI_THREAD_SERIALIZED). Prefer EXPECT_* before collectives in MPI tests.
//  4. --gtest_shuffle: the seed is taken from rank 0 so all ranks run the tests in the same order.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/mpi_test_env.h"

namespace shardfit::testing {

namespace {
Comm* g_world = nullptr;
}  // namespace

Comm& world() { return *g_world; }

}  // namespace shardfit::testing

namespace {

// Rationale 1: on ranks other than 0, failures only, with the rank. The test's name is remembered at its start:
// gtest calls OnTestPartResult holding the lock that UnitTest::current_test_info() takes.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}

  void OnTestStart(const ::testing::TestInfo& info) override {
    test_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure in %s\n[rank %d] %s\n", rank_,
                 result.file_name() != nullptr ? result.file_name() : "unknown", result.line_number(), test_.c_str(),
                 rank_, result.message());
    std::fflush(stderr);
  }

 private:
  int rank_;
  std::string test_ = "(outside a test)";
};

// Rationale 2: agree on each test's outcome.
class CrossRankResult : public ::testing::EmptyTestEventListener {
 public:
  CrossRankResult(MPI_Comm comm, int rank, int size) : comm_(comm), rank_(rank), failed_(static_cast<size_t>(size)) {}

  void OnTestEnd(const ::testing::TestInfo& info) override {
    const int mine = info.result()->Failed() ? 1 : 0;
    MPI_Allgather(&mine, 1, MPI_INT, failed_.data(), 1, MPI_INT, comm_);
    if (rank_ != 0) return;
    std::string others;
    for (size_t r = 1; r < failed_.size(); ++r) {
      if (failed_[r] != 0) others += (others.empty() ? "" : ", ") + std::to_string(r);
    }
    // Listeners get OnTestEnd in reverse order, so this runs before the printer reports the test.
    if (!others.empty()) ADD_FAILURE() << "failed on rank(s) " << others << " (see their [rank R] lines)";
  }

 private:
  MPI_Comm comm_;
  int rank_;
  std::vector<int> failed_;
};

// Rationale 3.
class Watchdog : public ::testing::EmptyTestEventListener {
 public:
  Watchdog(int rank, double limit_seconds) : rank_(rank), limit_(limit_seconds) {
    thread_ = std::thread([this] { watch(); });
  }
  ~Watchdog() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  void OnTestStart(const ::testing::TestInfo& info) override {
    std::lock_guard<std::mutex> lock(mutex_);
    test_ = std::string(info.test_suite_name()) + "." + info.name();
    deadline_ = std::chrono::steady_clock::now() +
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(limit_));
    wake_.notify_all();
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    std::lock_guard<std::mutex> lock(mutex_);
    deadline_.reset();
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      if (!deadline_) {
        wake_.wait(lock);
      } else if (wake_.wait_until(lock, *deadline_) == std::cv_status::timeout && deadline_ &&
                 std::chrono::steady_clock::now() >= *deadline_) {
        std::fprintf(stderr,
                     "[rank %d] %s still running after %.0f s: probably waiting in a collective that another rank "
                     "never reached; ending the job\n",
                     rank_, test_.c_str(), limit_);
        std::fflush(stderr);
        std::_Exit(1);
      }
    }
  }

  int rank_;
  double limit_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  std::string test_;
  bool stop_ = false;
  std::thread thread_;
};

double watchdog_seconds() {
  const char* text = std::getenv("SHARDFIT_TEST_TIMEOUT_S");
  const double value = text != nullptr ? std::atof(text) : 0.0;
  return value > 0.0 ? value : 60.0;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<shardfit::Comm> comm;
  try {
    comm.emplace(&argc, &argv);
  } catch (const std::exception& e) {
    shardfit::abort_job(e);
  }
  shardfit::testing::g_world = &*comm;
  ::testing::InitGoogleTest(&argc, argv);

  // Rationale 4.
  if (GTEST_FLAG_GET(shuffle)) {
    int64_t seed = GTEST_FLAG_GET(random_seed);
    if (comm->is_root() && seed == 0) seed = 1 + std::time(nullptr) % 99998;  // gtest's seed range
    GTEST_FLAG_SET(random_seed, static_cast<int32_t>(comm->broadcast(seed, 0)));
  }

  MPI_Comm results_comm = MPI_COMM_NULL;
  MPI_Comm_dup(comm->handle(), &results_comm);

  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (!comm->is_root()) {
    delete listeners.Release(listeners.default_result_printer());
    GTEST_FLAG_SET(output, "");  // one XML/JSON report (rank 0's), not P writers of one file
    listeners.Append(new RankFailurePrinter(comm->rank()));
  }
  // The watchdog goes first so that, with OnTestEnd called in reverse order, it is disarmed only after the
  // cross-rank exchange: a hang there is caught too.
  auto* watchdog = new Watchdog(comm->rank(), watchdog_seconds());
  listeners.Append(watchdog);
  listeners.Append(new CrossRankResult(results_comm, comm->rank(), comm->size()));

  const int local_status = RUN_ALL_TESTS();

  int status = 0;
  MPI_Allreduce(&local_status, &status, 1, MPI_INT, MPI_MAX, results_comm);
  if (comm->is_root() && status != 0) {
    std::fprintf(stderr, "[mpi] FAILED on at least one of %d ranks\n", comm->size());
  }
  delete listeners.Release(watchdog);
  MPI_Comm_free(&results_comm);
  return status;  // ~Comm finalizes MPI on every rank
}
