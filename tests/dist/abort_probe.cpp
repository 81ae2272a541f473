// A tiny MPI program for tests/dist/test_abort.cpp: fails on purpose in one of several ways, through run_ranks, so
// the test can check from outside that the whole job ends quickly with one message. Not a test by itself.
//
//   abort_probe mid_collective   rank 1 throws while the other ranks wait in MPI_Allreduce (-> Comm::abort)
//   abort_probe mid_overlap      rank 1 throws mid-backward while its overlapping reducer's communication thread
//                                waits in a bucket allreduce the others never join (-> GradientReducer::abandon)
//   abort_probe mid_overlap_sum  rank 1 throws mid-backward while the others' communication threads make a layer's
//                                sum it never joins (GradientReducer::sum_across_ranks; -> Comm::abort)
//   abort_probe agree_one        rank 1 fails at an agree() checkpoint, the others do not
//   abort_probe agree_all        every rank fails at an agree() checkpoint
//   abort_probe exit_status      every rank finishes; rank 1's body returns 3
//   abort_probe ok               every rank finishes with 0
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "dist/comm.h"
#include "dist/gradient_reducer.h"

namespace {

// Rank 1's failure: after 300 ms, long enough for every other rank to be inside the collective it never joins; the
// time it throws is printed for the test to measure how soon the job ends.
[[noreturn]] void throw_injected_failure() {
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  std::printf("probe: rank 1 throws at %lld ns\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()));
  std::fflush(stdout);
  SF_FAIL("injected failure in the middle of a step", "this failure is injected by the probe");
}

std::exception_ptr failure_on(bool here, const std::string& what) {
  if (!here) return nullptr;
  try {
    SF_FAIL(what, "this failure is injected by the probe");
  } catch (...) {
    return std::current_exception();
  }
}

int run_mode(shardfit::Comm& comm, const std::string& mode) {
  std::vector<float> values(1024, 1.0F);
  comm.allreduce_sum(values);  // everyone is up and connected before anything fails
  if (mode == "mid_collective") {
    if (comm.rank() == 1) {
      throw_injected_failure();
    }
    comm.allreduce_sum(values);  // never completes: rank 1 does not join
    return 0;
  }
  if (mode == "mid_overlap") {
    // As TrainStep does it: buckets handed over during backward, an error, abandon() before anything unwinds.
    std::vector<float> grads(4096, 1.0F);
    shardfit::GradientReducer reducer(comm, grads, 1024 * sizeof(float), shardfit::GradientReducer::Overlap::kThread);
    reducer.begin_step();
    if (comm.rank() == 1) {
      reducer.ready(0);  // all four buckets: the thread sits in bucket 0, which no other rank has begun
      try {
        throw_injected_failure();
      } catch (const std::exception& error) {
        reducer.abandon(error);
        throw;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(600));  // rank 1 has thrown: nothing more will match
    reducer.start(comm.size());
    reducer.finish();  // never completes
    return 0;
  }
  if (mode == "mid_overlap_sum") {
    // A synchronized BatchNormalization's backward sum with overlap on: made on the communication thread while the
    // training thread waits for it. Rank 1 has nothing in flight, so abandon() returns and run_ranks ends the job.
    std::vector<float> grads(4096, 1.0F);
    shardfit::GradientReducer reducer(comm, grads, 1024 * sizeof(float), shardfit::GradientReducer::Overlap::kThread);
    reducer.begin_step();
    if (comm.rank() == 1) {
      try {
        throw_injected_failure();
      } catch (const std::exception& error) {
        reducer.abandon(error);
        throw;
      }
    }
    std::vector<double> sums(8, 1.0);
    reducer.sum_across_ranks(sums);  // never completes
    return 0;
  }
  if (mode == "agree_one") comm.agree(failure_on(comm.rank() == 1, "cannot open missing.npy"));
  if (mode == "agree_all") comm.agree(failure_on(true, "cannot open missing.npy"));
  if (mode == "exit_status") return comm.rank() == 1 ? 3 : 0;
  if (mode == "ok") return 0;
  SF_FAIL("unknown probe mode '" + mode + "'");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  return shardfit::run_ranks(argc, argv, [&](shardfit::Comm& comm) { return run_mode(comm, mode); });
}
