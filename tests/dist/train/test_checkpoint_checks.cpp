// The range checks of a resume: a checkpoint whose checksum is right but whose fields make no sense for the run
// (hand-edited and re-summed, or written wrong) is refused naming the field, the value and the range expected. A
// checkpoint of another rank count is checked against the ranks that wrote it, and its partial epoch sums are
// redistributed over the ranks that resume (resumed_epoch_sums).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "dist/sharding.h"
#include "dist/train/checkpoint_checks.h"
#include "dist/train/checkpointer.h"
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
      {"rank count without its ranks' sums", [](auto& c) { c.set_world_size(4); },
       "field rank_epoch_sums (count) = 6: expected 12 (4 ranks x 3 sums: loss, metrics, count)"},
      {"no rank", [](auto& c) { c.set_world_size(0); },
       "field world_size = 0: expected the rank count that wrote it, 1 or more"},
      {"negative rank count", [](auto& c) { c.set_world_size(-2); }, "field world_size = -2"},
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

// A model with moving statistics (BatchNormalization) counts them among its parameters: the refusal says how many of
// each the model has.
TEST(CheckpointRanges, AParameterCountNamesTheNonTrainableStateToo) {
  CheckpointExpectations e = expectations();
  e.state_count = 2;
  proto::Checkpoint c = sample_checkpoint();
  c.add_parameters(1.0F);
  try {
    check_checkpoint(c, e, "ckpt/checkpoint.pb");
    ADD_FAILURE() << "no error";
  } catch (const Error& error) {
    EXPECT_TRUE(contains(error.what(),
                         "field parameters (count) = 7: expected 6, the model's parameter count (4 "
                         "trainable + 2 non-trainable)"))
        << error.what();
  }
}

// --- another rank count ----------------------------------------------------------------------------------------

// sample_checkpoint()'s position (epoch 3, 4 of 10 steps of 8 of 75 samples) as `world` ranks would have saved it:
// rank r's loss 0.5 and accuracy 0.25 per sample, and its share of the 32 samples.
proto::Checkpoint written_by(int world) {
  proto::Checkpoint c = sample_checkpoint();
  c.set_world_size(world);
  c.clear_rank_epoch_sums();
  for (int r = 0; r < world; ++r) {
    const auto count = static_cast<double>(ShardPlan(75, 8, world, r).samples_in_first_steps(4));
    for (const double v : {0.5 * count, 0.25 * count, count}) c.add_rank_epoch_sums(v);
  }
  return c;
}

TEST(AnotherRankCount, ACheckpointIsCheckedAgainstTheRanksThatWroteIt) {
  // The run's rank count is not among the expectations: any may resume.
  for (const int world : {1, 2, 3, 4, 8}) {
    EXPECT_EQ(range_error(written_by(world)), "no error") << world << " ranks";
  }
  // 3 ranks split each batch of 8 as 3, 3, 2; saved counts in the 2-rank split are refused naming the 3-rank share.
  proto::Checkpoint two_rank_counts = written_by(3);
  two_rank_counts.set_rank_epoch_sums(2, 16.0);
  two_rank_counts.set_rank_epoch_sums(5, 16.0);
  two_rank_counts.set_rank_epoch_sums(8, 0.0);
  const std::string message = range_error(two_rank_counts);
  EXPECT_TRUE(contains(message,
                       "field rank_epoch_sums[2] = 16: expected 12, rank 0's share of the samples of steps "
                       "1 to 4 of epoch 3"))
      << message;
  // The total is checked against the writers' counts too, whatever they were.
  proto::Checkpoint short_total = written_by(3);
  short_total.set_rank_epoch_sums(8, 7.0);
  EXPECT_TRUE(contains(range_error(short_total),
                       "field rank_epoch_sums (sample counts of ranks 0 to 2, summed) = 31: expected 32"))
      << range_error(short_total);
  // An epoch's last step: 75 samples in all, the remainder of 3 split 1, 1, 1 over 3 ranks (9 x 3 + 1 = 28).
  proto::Checkpoint last_step = written_by(3);
  last_step.set_step_in_epoch(10);
  last_step.set_global_step(30);
  for (int r = 0; r < 3; ++r) last_step.set_rank_epoch_sums(3 * r + 2, r < 2 ? 28.0 : 19.0);
  EXPECT_EQ(range_error(last_step), "no error");
}

std::vector<double> sums_of(const proto::Checkpoint& c) {
  return {c.rank_epoch_sums().begin(), c.rank_epoch_sums().end()};
}

// Every new rank's sums, resumed from `c` after `steps_done` steps.
std::vector<std::vector<double>> resume_on(const proto::Checkpoint& c, int world) {
  const std::vector<double> saved = sums_of(c);
  std::vector<std::vector<double>> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.push_back(resumed_epoch_sums(saved, c.world_size(), ShardPlan(75, 8, world, r), c.step_in_epoch()));
  }
  return ranks;
}

TEST(AnotherRankCount, TheSameRankCountKeepsEachRanksOwnSumsBitForBit) {
  proto::Checkpoint c = sample_checkpoint();
  const std::vector<std::vector<double>> ranks = resume_on(c, 2);
  EXPECT_EQ(ranks[0], (std::vector<double>{3.5, 2.0, 16.0}));
  EXPECT_EQ(ranks[1], (std::vector<double>{3.25, 1.0, 16.0}));
}

TEST(AnotherRankCount, SumsAreSharedOutByEachNewRanksSamples) {
  const proto::Checkpoint c = sample_checkpoint();  // 2 ranks: loss 3.5 + 3.25, accuracy 2 + 1, count 16 + 16
  // One rank takes the totals exactly, summed in the saved rank order.
  EXPECT_EQ(resume_on(c, 1)[0], (std::vector<double>{3.5 + 3.25, 2.0 + 1.0, 32.0}));
  // Three: counts 12, 12, 8 (each batch of 8 split 3, 3, 2), loss and accuracy in the same proportion.
  const std::vector<std::vector<double>> three = resume_on(c, 3);
  const double counts[] = {12.0, 12.0, 8.0};
  std::vector<double> totals(3, 0.0);
  for (int r = 0; r < 3; ++r) {
    ASSERT_EQ(three[r].size(), 3U);
    EXPECT_EQ(three[r][2], counts[r]) << "rank " << r;
    EXPECT_NEAR(three[r][0], 6.75 * counts[r] / 32.0, 1e-15) << "rank " << r;
    EXPECT_NEAR(three[r][1], 3.0 * counts[r] / 32.0, 1e-15) << "rank " << r;
    for (int i = 0; i < 3; ++i) totals[i] += three[r][i];
  }
  // The epoch's sums, what its loss and accuracy are computed from, up to rounding.
  EXPECT_NEAR(totals[0], 6.75, 4 * 6.75 * std::numeric_limits<double>::epsilon());
  EXPECT_NEAR(totals[1], 3.0, 4 * 3.0 * std::numeric_limits<double>::epsilon());
  EXPECT_EQ(totals[2], 32.0);
  // More ranks than a batch has samples: 16 ranks, a rank past the 8th gets no sample and no sums.
  const std::vector<std::vector<double>> sixteen = resume_on(c, 16);
  EXPECT_EQ(sixteen[7][2], 4.0);
  EXPECT_EQ(sixteen[8], (std::vector<double>{0.0, 0.0, 0.0}));
}

TEST(AnotherRankCount, AnEpochBoundaryGivesEveryRankZeros) {
  proto::Checkpoint c = written_by(2);
  c.set_step_in_epoch(0);
  for (int i = 0; i < c.rank_epoch_sums_size(); ++i) c.set_rank_epoch_sums(i, 0.0);
  for (const auto& sums : resume_on(c, 3)) EXPECT_EQ(sums, (std::vector<double>{0.0, 0.0, 0.0}));
}

// A requeue lands on 3 ranks, which train 3 more steps and are stopped: the checkpoint they write (their sums
// gathered in rank order) passes the checks as a 3-rank checkpoint, and resumes on 1 rank with the epoch's totals.
TEST(AnotherRankCount, ACheckpointWrittenAfterARedistributionPassesTheChecks) {
  const proto::Checkpoint two = sample_checkpoint();
  std::vector<std::vector<double>> three = resume_on(two, 3);
  for (int r = 0; r < 3; ++r) {
    const ShardPlan plan(75, 8, 3, r);
    for (int64_t step = 4; step < 7; ++step) {
      const auto count = static_cast<double>(plan.slice(step).count);
      three[r][0] += 0.5 * count;
      three[r][1] += count;
      three[r][2] += count;
    }
  }
  proto::Checkpoint later = two;
  later.set_world_size(3);
  later.set_step_in_epoch(7);
  later.set_global_step(27);
  later.mutable_optimizer()->set_iterations(27);
  later.clear_rank_epoch_sums();
  for (const auto& sums : three) {
    for (const double v : sums) later.add_rank_epoch_sums(v);
  }
  EXPECT_EQ(range_error(later), "no error");
  const std::vector<double> one = resume_on(later, 1)[0];
  EXPECT_EQ(one[2], 56.0);
  EXPECT_NEAR(one[0], 6.75 + 0.5 * 24, 1e-12);
  EXPECT_NEAR(one[1], 3.0 + 24, 1e-12);
}

TEST(AnotherRankCount, SumsThatDoNotSplitIntoRanksAreRefused) {
  const std::vector<double> seven(7, 1.0);
  try {
    resumed_epoch_sums(seven, 2, ShardPlan(75, 8, 1, 0), 4);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "7 saved epoch sums for 2 ranks")) << e.what();
  }
}

}  // namespace
}  // namespace shardfit
