// The agreed data checks of dist/data_checks.h, run at 1, 2 and 4 ranks on files every rank sees: identical files
// pass, a value check splits the rows among the ranks, and a label that no setup check caught is reported by its
// file and global row, not by its position in a rank's batch.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "dist/data_checks.h"
#include "dist/io/dataset.h"
#include "dist/io/npy_writer.h"
#include "dist/sharding.h"
#include "dist/train/evaluate.h"
#include "kernels/job_file.h"
#include "kernels/model_factory.h"
#include "tests/support/fit_fixture.h"
#include "tests/support/mpi_test_env.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;
using testing::SharedDir;
using testing::world;

constexpr int64_t kRows = 37;  // not a multiple of 2 or 4: uneven shares
constexpr int64_t kFeatures = 3;

// x.npy (kRows x kFeatures, value r at row r, NaN at nan_row unless -1) and y.npy (labels), written by rank 0.
Dataset write_and_open(const fs::path& dir, const std::vector<int64_t>& labels, int64_t nan_row = -1) {
  if (world().is_root()) {
    std::vector<float> x(kRows * kFeatures);
    for (int64_t i = 0; i < kRows * kFeatures; ++i) x[i] = static_cast<float>(i / kFeatures);
    if (nan_row >= 0) x[nan_row * kFeatures + 1] = std::numeric_limits<float>::quiet_NaN();
    write_npy(dir / "x.npy", x, {kRows, kFeatures});
    write_npy(dir / "y.npy", labels, {kRows});
  }
  world().barrier();
  proto::Dataset cfg;
  cfg.mutable_x()->set_path("x.npy");
  cfg.mutable_y()->set_path("y.npy");
  return Dataset::open(cfg, dir, "train");
}

std::vector<int64_t> good_labels() {
  std::vector<int64_t> y(kRows);
  for (int64_t r = 0; r < kRows; ++r) y[r] = r % 4;
  return y;
}

TEST(DataChecks, IdenticalFilesPassOnEveryRank) {
  const SharedDir shared("data_same");
  const Dataset data = write_and_open(shared.path(), good_labels());
  std::vector<DataFile> files;
  add_data_files(files, data, "train");
  agree_on_data_files(world(), files);
  check_data_values(world(), files);
  check_data_unchanged(world(), files);
}

TEST(DataChecks, NonFiniteValueStopsEveryRankNamingTheRow) {
  const SharedDir shared("data_nan");
  const Dataset data = write_and_open(shared.path(), good_labels(), kRows - 1);
  std::vector<DataFile> files;
  add_data_files(files, data, "train");
  try {
    check_data_values(world(), files);
    FAIL() << "a NaN in the last row passed";
  } catch (const AgreedFailure& e) {
    // The last rank's share holds the last row.
    EXPECT_EQ(e.failed_rank(), world().size() - 1) << e.what();
    EXPECT_NE(std::string(e.what()).find("x.npy: row " + std::to_string(kRows - 1) + ", column 1 is nan"),
              std::string::npos)
        << e.what();
  }
}

TEST(DataChecks, BadLabelInAStepNamesFileAndGlobalRow) {
  // Every label is out of range, so every rank fails on the first row of its share before any collective; what
  // it reports is that row of y.npy, not "sample 0" of its batch.
  const SharedDir shared("data_label");
  const Dataset data = write_and_open(shared.path(), std::vector<int64_t>(kRows, 7));
  const proto::Job job = parse_job_text(R"(
      model { layers { dense { units: 4 activation: "softmax" } } }
      loss: "sparse_categorical_crossentropy"
      metrics: "accuracy")",
                                        "labels.pbtxt");
  auto model = build_model(job, kFeatures);
  model->initialize(1);
  model->reserve(8);
  const int64_t first = slice_of(kRows, world().rank(), world().size()).offset;
  try {
    evaluate_rows(world(), *model, data, LabelLayout::kAsIs, 0, kRows);
    FAIL() << "labels of 7 for 4 classes passed";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("y.npy: row " + std::to_string(first) + ": "), std::string::npos) << what;
    EXPECT_NE(what.find("7"), std::string::npos) << what;
    EXPECT_NE(what.find("[0, 4)"), std::string::npos) << what;
    EXPECT_EQ(what.find("sample"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace shardfit
