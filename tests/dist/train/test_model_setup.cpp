// dist/train/model_setup.h at 1, 2 and 4 ranks: weights read on rank 0 alone reach every rank bit for bit, a bad
// file is one agreed failure, and the memory budget is this node's share for the rows asked.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "dist/io/weights_io.h"
#include "dist/train/model_setup.h"
#include "kernels/job_file.h"
#include "kernels/model.h"
#include "kernels/model_factory.h"
#include "tests/support/fit_fixture.h"
#include "tests/support/mpi_test_env.h"

namespace shardfit {
namespace {

using testing::SharedDir;
using testing::world;

proto::Job small_job() {
  return parse_job_text(R"(model { layers { dense { units: 5 activation: "relu" } } layers { dense { units: 2 } } }
                           loss: "mse")",
                        "setup.pbtxt");
}

TEST(LoadWeightsEverywhere, RankZeroReadsAndEveryRankGetsTheSameWeights) {
  const SharedDir shared("model_setup");
  const std::filesystem::path file = shared.path() / "w.npz";
  auto saved = build_model(small_job(), 3);
  saved->initialize(7);
  if (world().is_root()) save_weights(file, *saved);
  // Only rank 0 may need the file: the other ranks are given a path that does not exist.
  const std::filesystem::path path = world().is_root() ? file : shared.path() / "absent.npz";
  auto model = build_model(small_job(), 3);
  model->initialize(1000 + world().rank());  // different everywhere before the load
  load_weights_everywhere(world(), path, *model);
  EXPECT_EQ(float_checksum(model->parameters()), float_checksum(saved->parameters()));
}

TEST(LoadWeightsEverywhere, ABadFileIsOneAgreedFailure) {
  const SharedDir shared("model_setup_bad");
  const std::filesystem::path file = shared.path() / "notes.txt";
  if (world().is_root()) std::ofstream(file) << "these are not weights\n";
  auto model = build_model(small_job(), 3);
  bool explained = false;
  try {
    load_weights_everywhere(world(), file, *model, [&] { explained = true; });
    FAIL() << "a text file loaded as weights";
  } catch (const AgreedFailure& e) {
    EXPECT_EQ(e.failed_rank(), 0);
    EXPECT_EQ(e.failed_count(), 1) << "only rank 0 reads the file";
    EXPECT_NE(std::string(e.what()).find("notes.txt"), std::string::npos) << e.what();
  }
  EXPECT_EQ(explained, world().is_root()) << "on_error runs on rank 0 only";
}

TEST(RankMemoryBudget, IsThisNodesShareForTheRowsAsked) {
  const MemoryBudget budget = rank_memory_budget(world(), 64, 2);
  EXPECT_EQ(budget.rows, 64);
  EXPECT_EQ(budget.optimizer_slots, 2);
  EXPECT_EQ(budget.ranks_sharing, world().local_size());
  EXPECT_EQ(budget.available_bytes, 0u) << "0: the machine's memory, shared";
  EXPECT_EQ(rank_memory_budget(world(), 0, 0).rows, 1) << "an empty slice still counts one row";
}

}  // namespace
}  // namespace shardfit
