// Sizes of the model's buffers: overflow-checked counts, and the up-front memory check of build_model, which names
// the layer too large for the budget and the GiB it needs before anything is allocated.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "kernels/buffer.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/memory_budget.h"
#include "kernels/model_factory.h"
#include "kernels/optimizer.h"
#include "proto/shardfit.pb.h"

namespace shardfit {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

proto::Job job_with_units(const std::string& units, const std::string& optimizer = "adam {}") {
  return parse_job_text(cat("model { layers { dense { units: ", units, " activation: \"relu\" } }\n",
                            "        layers { dense { units: 10 activation: \"softmax\" } } }\n",
                            "loss: \"sparse_categorical_crossentropy\"\n", "optimizer { ", optimizer, " }\n"),
                        "memory.pbtxt");
}

std::string build_error(const proto::Job& job, int64_t input_dim, const MemoryBudget& budget) {
  try {
    build_model(job, input_dim, budget);
  } catch (const Error& e) {
    return std::string(e.what()) + "\nhint: " + e.hint();
  }
  return "no error";
}

TEST(CheckedSizes, MultiplyAndAddAtTheEdgeOfInt64) {
  EXPECT_EQ(checked_mul(64, 1000000000), 64000000000);
  EXPECT_EQ(checked_mul(0, kMax), 0);
  EXPECT_EQ(checked_mul(kMax, 1), kMax);
  EXPECT_EQ(checked_mul(kMax / 2, 2), kMax - 1);
  EXPECT_FALSE(checked_mul(kMax / 2 + 1, 2));
  EXPECT_FALSE(checked_mul(64, int64_t{1} << 62));  // the issue's units: 4611686018427387904 times 64 inputs
  EXPECT_FALSE(checked_mul(-1, 2)) << "counts are never negative";
  EXPECT_EQ(checked_add(kMax - 1, 1), kMax);
  EXPECT_FALSE(checked_add(kMax, 1));
  EXPECT_FALSE(checked_add(-1, 1));
}

TEST(CheckedSizes, ModelBytesCountParametersGradientsSlotsAndActivations) {
  MemoryBudget budget;
  budget.rows = 32;
  budget.optimizer_slots = 2;
  // 1000 parameters x (param, grad, m, v) + 32 rows x 50 floats, 4 bytes each.
  EXPECT_EQ(model_bytes(1000, 50, budget), (1000 * 4 + 32 * 50) * 4);
  budget.optimizer_slots = 0;
  EXPECT_EQ(model_bytes(1000, 50, budget), (1000 * 2 + 32 * 50) * 4);
  EXPECT_FALSE(model_bytes(kMax / 2, 0, budget)) << "2 x params overflows";
  budget.rows = kMax;
  EXPECT_FALSE(model_bytes(1, 2, budget)) << "rows x floats per row overflows";
}

TEST(CheckedSizes, BytesReadAsPeopleDo) {
  EXPECT_EQ(bytes_text(1.5 * 1024 * 1024 * 1024), "1.5 GiB");
  EXPECT_EQ(bytes_text(969.0 * 1024 * 1024 * 1024), "969 GiB");
  EXPECT_EQ(bytes_text(12.0 * 1024 * 1024), "12.0 MiB");
}

TEST(CheckedSizes, PhysicalMemoryIsKnownAndSharedByRanks) {
  const uint64_t physical = physical_memory_bytes();
  EXPECT_GT(physical, uint64_t{1} << 26);
  MemoryBudget budget;
  budget.ranks_sharing = 4;
  EXPECT_EQ(allowed_bytes(budget), physical / 4);
  budget.available_bytes = 12345;
  EXPECT_EQ(allowed_bytes(budget), 12345U) << "an explicit budget wins";
}

// mixed_bfloat16's weight copy: half a float per parameter, rounded up to whole floats.
TEST(CheckedSizes, TheBf16WeightCopyIsCounted) {
  MemoryBudget budget;
  budget.rows = 10;
  budget.optimizer_slots = 2;
  EXPECT_EQ(model_bytes(1001, 3, budget), ((1001 * 4) + 30) * 4);
  budget.bf16_weight_copy = true;
  EXPECT_EQ(model_bytes(1001, 3, budget), ((1001 * 4) + 501 + 30) * 4);
}

TEST(ModelMemoryCheck, ALayerTooLargeForTheBudgetIsNamedWithTheGiBItNeeds) {
  // 64 inputs x 1e9 units + 1e9 biases = 65e9 parameters; with Adam 4 floats each: 968.6 GiB.
  MemoryBudget budget;
  budget.available_bytes = uint64_t{16} << 30;
  budget.optimizer_slots = 2;
  const std::string message = build_error(job_with_units("1000000000"), 64, budget);
  EXPECT_NE(message.find("dense_0 (units 1000000000) needs 969 GiB of parameters, gradients and optimizer state"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("65000000000 parameters"), std::string::npos) << message;
  EXPECT_NE(message.find("expected at most 16.0 GiB"), std::string::npos) << message;
  EXPECT_NE(message.find("model.layers[0].dense.units"), std::string::npos) << message;
}

TEST(ModelMemoryCheck, TheLargestLayerIsNamedNotTheFirst) {
  MemoryBudget budget;
  budget.available_bytes = uint64_t{1} << 30;
  const proto::Job job = parse_job_text(R"(model { layers { dense { units: 8 } }
                                                   layers { dense { units: 200000000 } }
                                                   layers { dense { units: 2 } } }
                                           loss: "mse")",
                                        "memory.pbtxt");
  const std::string message = build_error(job, 4, budget);
  EXPECT_NE(message.find("dense_1 (units 200000000)"), std::string::npos) << message;
  EXPECT_NE(message.find("model.layers[1].dense.units"), std::string::npos) << message;
}

TEST(ModelMemoryCheck, ActivationsForTheBatchCount) {
  // 64 x 4096 + 4096 + 4096 x 10 + 10 parameters fit easily; 1e6 rows of 4096-wide activations do not.
  MemoryBudget budget;
  budget.available_bytes = uint64_t{1} << 30;
  EXPECT_NO_THROW(build_model(job_with_units("4096"), 64, budget));
  budget.rows = 1000000;
  const std::string message = build_error(job_with_units("4096"), 64, budget);
  EXPECT_NE(message.find("for 1000000 rows per step"), std::string::npos) << message;
  EXPECT_NE(message.find("dense_0 (units 4096)"), std::string::npos) << message;
}

TEST(ModelMemoryCheck, ParameterCountsThatOverflowNameTheLayerNotTheOptimizer) {
  const std::string message = build_error(job_with_units("4611686018427387904"), 64, MemoryBudget{});
  EXPECT_NE(message.find("dense_0 (units 4611686018427387904) would have 64 x 4611686018427387904 parameters, "
                         "more than a 64-bit count holds"),
            std::string::npos)
      << message;
  EXPECT_EQ(message.find("optimizer"), std::string::npos) << message;
}

TEST(ModelMemoryCheck, SlotsFollowTheOptimizer) {
  proto::Optimizer sgd;
  EXPECT_EQ(optimizer_slot_count(sgd), 2) << "no kind: Adam";
  sgd.mutable_sgd();
  EXPECT_EQ(optimizer_slot_count(sgd), 0);
  sgd.mutable_sgd()->set_momentum(0.9F);
  EXPECT_EQ(optimizer_slot_count(sgd), 1);
  proto::Optimizer rmsprop;
  rmsprop.mutable_rmsprop();
  EXPECT_EQ(optimizer_slot_count(rmsprop), 1);
  rmsprop.mutable_rmsprop()->set_momentum(0.5F);
  EXPECT_EQ(optimizer_slot_count(rmsprop), 2);
}

TEST(FloatBufferAllocation, ACountNoAllocatorCanServeIsAnErrorNotACrash) {
  FloatBuffer buffer(16);
  EXPECT_THROW(buffer.resize(-1), Error);
  EXPECT_THROW(buffer.resize(kMax), Error);
  // 2^60 bytes: representable, never available. aligned_alloc returns null; before, memset wrote through it.
  EXPECT_THROW(buffer.resize(int64_t{1} << 58), Error);
  EXPECT_EQ(buffer.count(), 0) << "a failed resize leaves an empty buffer, not a dangling count";
  buffer.resize(3);
  EXPECT_EQ(buffer.count(), 3);
  EXPECT_EQ(buffer[2], 0.0F);
}

}  // namespace
}  // namespace shardfit
