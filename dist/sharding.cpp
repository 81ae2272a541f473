// Validation split, epoch permutation and per-rank batch slices. Everything here must give bit-identical answers
// on every rank: no floating point beyond the one floor() the contract fixes, no state, no communication.
#include "dist/sharding.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/error.h"
#include "kernels/random.h"

namespace shardfit {

namespace {

// Stream tag for the shuffle ('SH'): keeps the permutation's random stream apart from init and dropout streams
// that hash the same seed.
constexpr uint64_t kShuffleStream = 0x5348;

}  // namespace

SplitCounts split_for_validation(int64_t n, double validation_split) {
  SF_CHECK(n >= 0, cat("sample count = ", n, ": expected a count >= 0"));
  // Written so that NaN fails too: every comparison with NaN is false.
  SF_CHECK(validation_split >= 0.0 && validation_split < 1.0,
           cat("validation_split = ", validation_split, ": expected a fraction in [0, 1)"),
           "validation_split is the share of samples held out from the end of the data, e.g. 0.1 for 10%");
  if (validation_split == 0.0) return {n, 0};
  const auto split_at = static_cast<int64_t>(std::floor(static_cast<double>(n) * (1.0 - validation_split)));
  SF_CHECK(split_at > 0, cat("validation_split = ", validation_split, " leaves no training samples out of ", n,
                             ": expected a fraction that keeps at least one sample for training"));
  SF_CHECK(split_at < n, cat("validation_split = ", validation_split, " leaves no validation samples out of ", n,
                             ": expected a fraction that holds out at least one sample"));
  return {split_at, n - split_at};
}

void epoch_permutation(int64_t n, uint64_t seed, int64_t epoch, bool shuffle, std::vector<int64_t>& out) {
  SF_CHECK(n >= 0, cat("permutation length = ", n, ": expected a count >= 0"));
  out.resize(static_cast<size_t>(n));
  std::iota(out.begin(), out.end(), int64_t{0});
  if (!shuffle) return;
  // Fisher-Yates from the back: position i swaps with a uniform j in [0, i]. Spelled out rather than
  // std::shuffle, whose use of the generator is unspecified and differs between standard libraries.
  Rng rng(hash_key(seed, kShuffleStream, static_cast<uint64_t>(epoch)));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(out[static_cast<size_t>(i)], out[static_cast<size_t>(j)]);
  }
}

Slice slice_of(int64_t count, int rank, int world) {
  SF_CHECK(world >= 1, cat("world size = ", world, ": expected at least 1 rank"));
  SF_CHECK(rank >= 0 && rank < world, cat("rank = ", rank, ": expected a rank in [0, ", world, ")"));
  SF_CHECK(count >= 0, cat("sample count = ", count, ": expected a count >= 0"));
  const int64_t base = count / world;
  const int64_t extra = count % world;
  const int64_t r = rank;
  return {r * base + std::min(r, extra), base + (r < extra ? 1 : 0)};
}

ShardPlan::ShardPlan(int64_t train_count, int64_t global_batch, int world_size, int rank)
    : train_count_(train_count), global_batch_(global_batch), world_size_(world_size), rank_(rank), steps_(0) {
  SF_CHECK(train_count >= 0, cat("training sample count = ", train_count, ": expected a count >= 0"));
  SF_CHECK(global_batch >= 1, cat("batch_size = ", global_batch, ": expected at least 1 (the global batch)"));
  SF_CHECK(world_size >= 1, cat("world size = ", world_size, ": expected at least 1 rank"));
  SF_CHECK(rank >= 0 && rank < world_size, cat("rank = ", rank, ": expected a rank in [0, ", world_size, ")"));
  steps_ = train_count / global_batch + (train_count % global_batch != 0 ? 1 : 0);
}

void ShardPlan::check_step(int64_t step) const {
  SF_CHECK(step >= 0 && step < steps_, cat("step = ", step, ": expected a step in [0, ", steps_, ")"));
}

int64_t ShardPlan::batch_start(int64_t step) const {
  check_step(step);
  return step * global_batch_;
}

int64_t ShardPlan::batch_count(int64_t step) const {
  check_step(step);
  return std::min(global_batch_, train_count_ - step * global_batch_);
}

Slice ShardPlan::slice(int64_t step) const { return slice_of(batch_count(step), rank_, world_size_); }

int64_t ShardPlan::max_local_count() const {
  // Full batches give the largest slices; with one step only, that step is the whole (smaller) data set.
  return slice_of(std::min(global_batch_, train_count_), rank_, world_size_).count;
}

int64_t ShardPlan::samples_in_first_steps(int64_t steps_done) const {
  SF_CHECK(steps_done >= 0 && steps_done <= steps_,
           cat("steps done = ", steps_done, ": expected 0 to ", steps_, " (the steps of an epoch)"));
  if (steps_done == 0) return 0;
  // Every step but the last holds a full global batch, split alike each time; the last holds the remainder.
  const int64_t full_steps = std::min(steps_done, steps_ - 1);
  int64_t samples = full_steps * slice_of(global_batch_, rank_, world_size_).count;
  if (steps_done == steps_) samples += slice(steps_ - 1).count;
  return samples;
}

}  // namespace shardfit
