// Helpers shared by the MPI tests of the distributed fit (test_fit, test_fit_callbacks): the bundled digits written
// into a folder every rank sees, a quiet FitConfig, and History series compared across runs. Header-only; every
// rank calls the collective ones (SharedDir, write_digits) together.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "dist/io/dataset.h"
#include "dist/io/npy_writer.h"
#include "dist/train/fit.h"
#include "proto/shardfit.pb.h"
#include "tests/support/history_series.h"
#include "tests/support/mpi_test_env.h"

namespace shardfit::testing {

// The source tree: SHARDFIT_SOURCE_DIR under CTest, else the first folder up from here that holds the digits
// (so the tests also run by hand from build/).
inline std::filesystem::path source_dir() {
  namespace fs = std::filesystem;
  if (const char* dir = std::getenv("SHARDFIT_SOURCE_DIR"); dir != nullptr) return dir;
  for (fs::path at = fs::current_path(); !at.empty(); at = at.parent_path()) {
    if (fs::exists(at / "examples/digits/x.npy")) return at;
    if (at == at.parent_path()) break;
  }
  return fs::current_path();
}

// A folder every rank sees: rank 0 makes it and broadcasts its name; removed when every rank is done with it,
// also when an ASSERT ended the test early.
class SharedDir {
 public:
  explicit SharedDir(const std::string& tag) {
    std::string path;
    if (world().is_root()) {
      std::string pattern = (std::filesystem::temp_directory_path() / ("shardfit_" + tag + "_XXXXXX")).string();
      path = mkdtemp(pattern.data());
    }
    world().broadcast(path, 0);
    path_ = path;
  }
  SharedDir(const SharedDir&) = delete;
  SharedDir& operator=(const SharedDir&) = delete;
  ~SharedDir() {
    world().barrier();
    if (world().is_root()) std::filesystem::remove_all(path_);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// begin, begin + 1, ..., end - 1.
inline std::vector<int64_t> range(int64_t begin, int64_t end) {
  std::vector<int64_t> rows;
  for (int64_t i = begin; i < end; ++i) rows.push_back(i);
  return rows;
}

// The bundled digits, rows in the order given, as <stem>_x.npy / <stem>_y.npy in dir (rank 0), then a barrier.
// as_images: x of shape (rows, 8, 8), grey images as an image file stores them, instead of (rows, 64).
inline void write_digits(const std::filesystem::path& dir, const std::string& stem, const std::vector<int64_t>& rows,
                         bool as_images = false) {
  if (world().is_root()) {
    proto::Dataset cfg;
    cfg.mutable_x()->set_path("x.npy");
    cfg.mutable_y()->set_path("y.npy");
    const Dataset digits = Dataset::open(cfg, source_dir() / "examples/digits", "train");
    std::vector<float> x(rows.size() * digits.feature_dim());
    std::vector<float> y(rows.size());
    digits.gather(rows, x.data(), y.data(), LabelLayout::kAsIs, 1);
    std::vector<int64_t> ids(y.begin(), y.end());
    const auto count = static_cast<int64_t>(rows.size());
    write_npy(dir / (stem + "_x.npy"), x,
              as_images ? std::vector<int64_t>{count, 8, 8} : std::vector<int64_t>{count, digits.feature_dim()});
    write_npy(dir / (stem + "_y.npy"), std::span<const int64_t>(ids), {static_cast<int64_t>(rows.size())});
  }
  world().barrier();
}

// No console, no history files, no checkpoints, no weights file: a test run leaves nothing behind but what its
// callbacks write.
inline FitConfig quiet_config(const proto::Job& job) {
  FitConfig config = resolve_fit_config(job, false);
  config.verbose = 0;
  config.write_history = false;
  config.checkpoint_every_epochs = 0;
  config.export_weights.clear();
  return config;
}

}  // namespace shardfit::testing
