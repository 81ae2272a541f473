// core_to_core: round-trip latency of one cache line bounced between two CPUs (the first two this process may
// run on), for bench/compare_torch.sh to record next to each run. Not a benchmark of shardfit.
//
// Why: on the shared 2-vCPU machine, shardfit's 2-rank steps at small batches swing by 2x with no other process
// running. The ranks talk through shared memory (the allreduce) and then read buffers the other core wrote (the
// reducer's scaling), so their speed follows how far apart the two vCPUs are on the host, which the hypervisor
// can change at any time. A ~50 ns round trip means close (same L3); hundreds of ns mean far apart or contended.
//
//   build/bench/core_to_core      prints `core_to_core cpus=0,1 round_trip_ns=MEDIAN min_ns=MIN`
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

namespace {

constexpr int kRoundTrips = 100000;
constexpr int kRepeats = 5;

bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

}  // namespace

int main() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    std::perror("core_to_core: sched_getaffinity");
    return 1;
  }
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE && cpus.size() < 2; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  }
  if (cpus.size() < 2) {
    std::fprintf(stderr, "core_to_core: needs two CPUs, this process may run on %zu\n", cpus.size());
    return 1;
  }

  // The main thread writes odd values, the partner answers with the next even one: one round trip per value.
  alignas(64) static std::atomic<int> line{0};
  std::vector<double> round_trip_ns;
  for (int repeat = 0; repeat < kRepeats; ++repeat) {
    line.store(0);
    std::thread partner([&] {
      pin_to(cpus[1]);
      for (int i = 0; i < kRoundTrips; ++i) {
        while (line.load(std::memory_order_acquire) != 2 * i + 1) {
        }
        line.store(2 * i + 2, std::memory_order_release);
      }
    });
    pin_to(cpus[0]);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRoundTrips; ++i) {
      line.store(2 * i + 1, std::memory_order_release);
      while (line.load(std::memory_order_acquire) != 2 * i + 2) {
      }
    }
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    partner.join();
    round_trip_ns.push_back(ns / kRoundTrips);
  }
  std::sort(round_trip_ns.begin(), round_trip_ns.end());
  std::printf("core_to_core cpus=%d,%d round_trip_ns=%.0f min_ns=%.0f\n", cpus[0], cpus[1],
              round_trip_ns[round_trip_ns.size() / 2], round_trip_ns.front());
  return 0;
}
