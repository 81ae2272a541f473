// The range checks of a resume: a checkpoint whose checksum is right but whose fields make no sense for the run
// (hand-edited and re-summed, or written wrong) is refused naming the field, the value and the range expected.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "dist/train/checkpoint_checks.h"
#include "kernels/error.h"
#include "tests/support/checkpoint_sample.h"
#include "tests/support/text.h"

namespace shardfit {
namespace {

// The run sample_checkpoint() belongs to.
CheckpointExpectations expectations() {
  CheckpointExpectations e;
  e.epochs = 5;
  e.train_count = 75;  // batch 8: 10 steps per epoch, the last of 3 samples (2 on rank 0, 1 on rank 1)
  e.global_batch = 8;
  e.world_size = 2;
  e.fingerprint = "the job";
  e.param_count = kSampleParams;
  e.optimizer_kind = "adam";
  e.slots = {{"m", kSampleParams}, {"v", kSampleParams}};
  e.sums_per_rank = 3;  // loss, accuracy, count
  return e;
}

std::string range_error(const proto::Checkpoint& c) {
  try {
    check_checkpoint(c, expectations(), "ckpt/checkpoint.pb");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

using testing::contains;

TEST(CheckpointRanges, AValidCheckpointPasses) {
  EXPECT_EQ(range_error(sample_checkpoint()), "no error");
  proto::Checkpoint end = sample_checkpoint();  // the end of the last epoch
  end.set_epoch(5);
  end.set_step_in_epoch(0);
  end.set_global_step(50);
  for (int i = 0; i < end.rank_epoch_sums_size(); ++i) end.set_rank_epoch_sums(i, 0.0);  // a new epoch: no sums yet
  EXPECT_EQ(range_error(end), "no error");
  proto::Checkpoint signal = sample_checkpoint();  // a signal at the last step: the whole epoch trained
  signal.set_step_in_epoch(10);
  signal.set_global_step(30);
  signal.set_rank_epoch_sums(2, 9 * 4 + 2);  // 9 full batches of 4 per rank, then 2 of the last 3 samples
  signal.set_rank_epoch_sums(5, 9 * 4 + 1);
  EXPECT_EQ(range_error(signal), "no error");
  proto::Checkpoint zero_rate = sample_checkpoint();  // a cosine schedule ends at 0
  zero_rate.mutable_optimizer()->set_learning_rate(0.0F);
  EXPECT_EQ(range_error(zero_rate), "no error");
}

// Each case edits one field of a valid checkpoint; the error must name it, its value and what was expected.
struct Edit {
  const char* name;
  std::function<void(proto::Checkpoint&)> apply;
  const char* expected_text;
};

TEST(CheckpointRanges, EachFieldThatDrivesTheLoopIsChecked) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Edit> edits = {
      {"negative epoch", [](auto& c) { c.set_epoch(-1); }, "field epoch = -1: expected epochs completed, 0 to 5"},
      {"epoch past the run", [](auto& c) { c.set_epoch(6); }, "field epoch = 6: expected"},
      {"step past the epoch", [](auto& c) { c.set_step_in_epoch(11); },
       "field step_in_epoch = 11: expected steps of epoch 3 completed, 0 to 10"},
      {"negative step", [](auto& c) { c.set_step_in_epoch(-3); }, "field step_in_epoch = -3"},
      {"step after the last epoch",
       [](auto& c) {
         c.set_epoch(5);
         c.set_step_in_epoch(1);
         c.set_global_step(51);
       },
       "field step_in_epoch = 1: expected steps of epoch 6 completed, 0 to 0"},
      {"global step", [](auto& c) { c.set_global_step(7); }, "field global_step = 7: expected 24 (epoch 2 x 10"},
      {"more history than epochs", [](auto& c) { c.mutable_history()->add_epochs()->set_epoch(2); },
       "field history.epochs (records) = 3"},
      {"NaN learning rate", [nan](auto& c) { c.mutable_optimizer()->set_learning_rate(nan); },
       "field optimizer.learning_rate = nan: expected a finite number >= 0"},
      {"negative learning rate", [](auto& c) { c.mutable_optimizer()->set_learning_rate(-0.5F); },
       "field optimizer.learning_rate = -0.5"},
      {"negative iterations", [](auto& c) { c.mutable_optimizer()->set_iterations(-2); },
       "field optimizer.iterations = -2: expected 0 to 24"},
      {"iterations past the steps", [](auto& c) { c.mutable_optimizer()->set_iterations(25); },
       "field optimizer.iterations = 25"},
      {"optimizer kind", [](auto& c) { c.mutable_optimizer()->set_kind("sgd"); }, "field optimizer.kind = sgd"},
      {"parameter count", [](auto& c) { c.add_parameters(1.0F); }, "field parameters (count) = 7: expected 6"},
      {"NaN parameter", [nan](auto& c) { c.set_parameters(3, nan); }, "field parameters[3] = nan: expected finite"},
      {"infinite parameter", [](auto& c) { c.set_parameters(0, INFINITY); }, "field parameters[0] = inf"},
      {"slot count", [](auto& c) { c.mutable_optimizer()->mutable_slots()->RemoveLast(); },
       "field optimizer.slots (count) = 1: expected 2"},
      {"slot name", [](auto& c) { c.mutable_optimizer()->mutable_slots(1)->set_name("w"); },
       "field optimizer.slots[1].name = w"},
      {"slot size", [](auto& c) { c.mutable_optimizer()->mutable_slots(0)->add_values(0.0F); },
       "field optimizer.slots[0].values (count) = 7: expected 6"},
      {"NaN slot value", [nan](auto& c) { c.mutable_optimizer()->mutable_slots(1)->set_values(5, nan); },
       "field optimizer.slots[1].values[5] = nan"},
      {"epoch sums count", [](auto& c) { c.add_rank_epoch_sums(0.0); },
       "field rank_epoch_sums (count) = 7: expected 6 (2 ranks x 3 sums"},
      {"NaN epoch sum", [](auto& c) { c.set_rank_epoch_sums(1, std::nan("")); }, "field rank_epoch_sums[1] = nan"},
      {"negative sample count", [](auto& c) { c.set_rank_epoch_sums(5, -16.0); },
       "field rank_epoch_sums[5] = -16: expected rank 1's sample count"},
      {"fractional sample count", [](auto& c) { c.set_rank_epoch_sums(2, 15.5); }, "field rank_epoch_sums[2] = 15.5"},
      {"zeroed sample counts",
       [](auto& c) {
         c.set_rank_epoch_sums(2, 0.0);
         c.set_rank_epoch_sums(5, 0.0);
       },
       "field rank_epoch_sums (sample counts of ranks 0 to 1, summed) = 0: expected 32, the samples of steps 1 to 4 "
       "of epoch 3 trained (75 samples per epoch, batch_size 8)"},
      {"the last step with a full epoch's counts missing",
       [](auto& c) {
         c.set_step_in_epoch(10);
         c.set_global_step(30);
       },
       "field rank_epoch_sums (sample counts of ranks 0 to 1, summed) = 32: expected 75"},
      {"counts moved between ranks",
       [](auto& c) {
         c.set_rank_epoch_sums(2, 20.0);
         c.set_rank_epoch_sums(5, 12.0);
       },
       "field rank_epoch_sums[2] = 20: expected 16, rank 0's share of the samples of steps 1 to 4 of epoch 3"},
      {"counts at an epoch boundary",
       [](auto& c) {
         c.set_step_in_epoch(0);
         c.set_global_step(20);
         c.mutable_optimizer()->set_iterations(20);
       },
       "expected 0, the samples of no step of epoch 3 trained yet"},
      {"rank count", [](auto& c) { c.set_world_size(4); }, "was written by 4 ranks, this run has 2"},
      {"another job", [](auto& c) { c.set_job_fingerprint("other"); }, "belongs to a different job"},
  };
  for (const Edit& edit : edits) {
    proto::Checkpoint c = sample_checkpoint();
    edit.apply(c);
    const std::string message = range_error(c);
    EXPECT_TRUE(contains(message, "checkpoint 'ckpt/checkpoint.pb'")) << edit.name << ": " << message;
    EXPECT_TRUE(contains(message, edit.expected_text)) << edit.name << ": " << message;
  }
}

}  // namespace
}  // namespace shardfit
