// gzip_bench: what a rank pays at start to read a gzip-compressed data file, the two ways docs/data.md compares.
//   gzip_bench stream FILE.gz   inflate the whole file into this process's memory (what streaming costs each rank:
//                               a shuffled epoch wants rows from anywhere in the file)
//   gzip_bench cache FILE.gz    ArrayFile::open through the decompressed cache (dist/io/gzip_cache.h): inflated,
//                               written, fsync'ed and renamed when the cache has no copy yet, else only mapped
//   SHARDFIT_CACHE_DIR picks the cache folder (an empty one times a cold start). Run several at once to see ranks
// that start together. Not a test: prints one line of seconds and bytes.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "dist/io/dataset.h"
#include "dist/io/inflate.h"
#include "kernels/error.h"

int main(int argc, char** argv) {
  if (argc != 3 || (std::strcmp(argv[1], "stream") != 0 && std::strcmp(argv[1], "cache") != 0)) {
    std::fprintf(stderr, "usage: %s stream|cache FILE.gz\n", argv[0]);
    return 2;
  }
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  try {
    const std::string mode = argv[1];
    const auto start = Clock::now();
    if (mode == "stream") {
      std::ifstream in(argv[2], std::ios::binary);
      const std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::vector<char> inflated;
      const int64_t bytes = shardfit::inflate_gzip(
          gz, argv[2], [&](const char* data, size_t n) { inflated.insert(inflated.end(), data, data + n); });
      std::printf("stream %s: %.3f s, %lld bytes inflated into memory\n", argv[2], seconds(start),
                  static_cast<long long>(bytes));
    } else {
      const shardfit::ArrayFile file = shardfit::ArrayFile::open(argv[2]);
      const double open_s = seconds(start);
      // Every row once, as the epochs of a 1-rank job read them: the mapped copy's pages.
      std::vector<int64_t> rows(static_cast<size_t>(file.rows()));
      for (int64_t r = 0; r < file.rows(); ++r) rows[static_cast<size_t>(r)] = r;
      std::vector<float> out(static_cast<size_t>(file.rows() * file.cols()));
      const auto read_start = Clock::now();
      file.read_rows(rows, out.data());
      std::printf("cache %s: open %.3f s, every row read %.3f s, %s\n", argv[2], open_s, seconds(read_start),
                  file.describe().c_str());
    }
  } catch (const shardfit::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
