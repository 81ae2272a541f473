// Which samples each rank trains on: the validation split, the epoch's permutation and each rank's slice of every
// global batch (KERAS_CONTRACT.md). Pure arithmetic, identical on every rank; no MPI and no data access here.
#pragma once

#include <cstdint>
#include <vector>

namespace shardfit {

// Rows [0, train) train, rows [train, train + validation) validate.
struct SplitCounts {
  int64_t train;
  int64_t validation;
};

// Keras validation_split: split_at = floor(n * (1 - validation_split)) in double, the held-out rows taken from the
// END of the data in file order. validation_split == 0 gives {n, 0}. Fails on a fraction outside [0, 1) or NaN,
// and on a fraction > 0 that leaves no training or no validation sample.
SplitCounts split_for_validation(int64_t n, double validation_split);

// The order in which epoch `epoch` visits the n training rows: the identity without shuffle, else a Fisher-Yates
// shuffle driven by Rng(hash_key(seed, 'SH', epoch)) so every rank and machine computes the same order without
// communicating. `out` is resized to n (reusing its capacity).
void epoch_permutation(int64_t n, uint64_t seed, int64_t epoch, bool shuffle, std::vector<int64_t>& out);

// A contiguous run of samples: [offset, offset + count).
struct Slice {
  int64_t offset;
  int64_t count;
};

// Rank `rank`'s share of `count` samples split over `world` ranks: contiguous slices in rank order whose sizes differ
// by at most one, the first (count % world) ranks taking one more. A rank may get count 0. Used for training batches,
// the validation set and evaluate alike.
Slice slice_of(int64_t count, int rank, int world);

// One epoch's steps for one rank. Step s covers positions [batch_start(s), batch_start(s) + batch_count(s)) of the
// epoch's permutation; this rank gathers positions batch_start(s) + slice(s).offset onward, slice(s).count of them.
class ShardPlan {
 public:
  ShardPlan(int64_t train_count, int64_t global_batch, int world_size, int rank);

  // ceil(train_count / global_batch); the last batch keeps the remainder, nothing is dropped or padded.
  int64_t steps() const { return steps_; }
  // Position in the epoch's permutation where step `step`'s global batch begins.
  int64_t batch_start(int64_t step) const;
  // Global samples in step `step` (all ranks together): global_batch, or the remainder for the last step.
  int64_t batch_count(int64_t step) const;
  // This rank's part of step `step`'s global batch; offset is relative to batch_start(step).
  Slice slice(int64_t step) const;
  // The most samples this rank ever gets in one step: the size to allocate the local batch buffers for.
  int64_t max_local_count() const;
  // This rank's samples in the epoch's first `steps_done` steps (0 to steps()): the count its epoch sums hold then.
  int64_t samples_in_first_steps(int64_t steps_done) const;

  int64_t train_count() const { return train_count_; }
  int64_t global_batch() const { return global_batch_; }
  int world_size() const { return world_size_; }
  int rank() const { return rank_; }

 private:
  void check_step(int64_t step) const;

  int64_t train_count_;
  int64_t global_batch_;
  int world_size_;
  int rank_;
  int64_t steps_;
};

}  // namespace shardfit
