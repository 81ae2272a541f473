// data_check_bench: times the setup-time data checks of dist/data_checks.h on one file, as one rank of a job does
// them: the sampled fingerprint every rank computes, and the value check of this rank's share of the rows.
//   data_check_bench FILE [RANK WORLD]      (drop the page cache first to time a cold start)
// Not a test: prints seconds and throughput.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "dist/io/dataset.h"
#include "dist/sharding.h"

int main(int argc, char** argv) {
  if (argc != 2 && argc != 4) {
    std::fprintf(stderr, "usage: %s FILE [RANK WORLD]\n", argv[0]);
    return 2;
  }
  const int rank = argc == 4 ? std::atoi(argv[2]) : 0;
  const int world = argc == 4 ? std::atoi(argv[3]) : 1;
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  try {
    const auto open_start = Clock::now();
    const shardfit::ArrayFile file = shardfit::ArrayFile::open(argv[1]);
    const double open_s = seconds(open_start);

    const auto fingerprint_start = Clock::now();
    const uint64_t fingerprint = file.sampled_fingerprint();
    const double fingerprint_s = seconds(fingerprint_start);

    const shardfit::Slice share = shardfit::slice_of(file.rows(), rank, world);
    const auto check_start = Clock::now();
    file.check_values(share.offset, share.count);
    const double check_s = seconds(check_start);
    // Again, with the pages mapped and cached: the scan alone, without page faults or disk reads.
    const auto again_start = Clock::now();
    file.check_values(share.offset, share.count);
    const double again_s = seconds(again_start);
    const double share_bytes =
        static_cast<double>(file.file_bytes()) * static_cast<double>(share.count) / static_cast<double>(file.rows());
    std::printf(
        "%s: %s, %lld bytes\n  open %.3f s\n  sampled fingerprint %016llx: %.4f s\n  check_values rank %d/%d, "
        "%lld rows (%.2f GB): %.3f s = %.2f GB/s, %.3g rows/s; again (mapped): %.3f s = %.2f GB/s\n",
        argv[1], file.describe().c_str(), static_cast<long long>(file.file_bytes()), open_s,
        static_cast<unsigned long long>(fingerprint), fingerprint_s, rank, world, static_cast<long long>(share.count),
        share_bytes / 1e9, check_s, share_bytes / 1e9 / check_s, static_cast<double>(share.count) / check_s, again_s,
        share_bytes / 1e9 / again_s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
