// Tests for dist/sharding: the validation split, the epoch permutation and ShardPlan's slices. The slice tests
// sweep (N, batch, P) and check the invariants the fit loop relies on, not a table of expected numbers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "dist/sharding.h"
#include "kernels/error.h"
#include "kernels/random.h"

namespace shardfit {
namespace {

// Runs fn, expects a shardfit::Error whose message contains every fragment.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << *fragments.begin() << "'";
  } catch (const Error& e) {
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

TEST(SplitForValidation, ContractExamples) {
  const SplitCounts mnist = split_for_validation(60000, 0.1);
  EXPECT_EQ(mnist.train, 54000);
  EXPECT_EQ(mnist.validation, 6000);
  const SplitCounts tiny = split_for_validation(3, 0.5);
  EXPECT_EQ(tiny.train, 1);
  EXPECT_EQ(tiny.validation, 2);
  const SplitCounts digits = split_for_validation(1797, 0.2);  // floor(1797 * 0.8) = floor(1437.6)
  EXPECT_EQ(digits.train, 1437);
  EXPECT_EQ(digits.validation, 360);
}

TEST(SplitForValidation, ZeroKeepsEverything) {
  const SplitCounts s = split_for_validation(10, 0.0);
  EXPECT_EQ(s.train, 10);
  EXPECT_EQ(s.validation, 0);
  const SplitCounts one = split_for_validation(1, 0.0);
  EXPECT_EQ(one.train, 1);
  EXPECT_EQ(one.validation, 0);
}

TEST(SplitForValidation, MatchesFloorFormulaOverASweep) {
  for (int64_t n : {2, 3, 7, 10, 100, 1797, 60000}) {
    for (double f : {0.01, 0.1, 0.2, 0.25, 0.3, 1.0 / 3.0, 0.5, 0.9, 0.99}) {
      const auto split_at = static_cast<int64_t>(std::floor(static_cast<double>(n) * (1.0 - f)));
      if (split_at == 0 || split_at == n) continue;  // error cases, tested below
      const SplitCounts s = split_for_validation(n, f);
      EXPECT_EQ(s.train, split_at) << n << " " << f;
      EXPECT_EQ(s.train + s.validation, n);
      EXPECT_GT(s.validation, 0);
    }
  }
}

TEST(SplitForValidation, RejectsBadFractions) {
  expect_error([] { split_for_validation(100, 1.0); }, {"validation_split = 1", "[0, 1)"});
  expect_error([] { split_for_validation(100, -0.1); }, {"validation_split = -0.1", "[0, 1)"});
  expect_error([] { split_for_validation(100, std::numeric_limits<double>::quiet_NaN()); },
               {"validation_split = nan", "[0, 1)"});
  expect_error([] { split_for_validation(100, 1.5); }, {"[0, 1)"});
}

TEST(SplitForValidation, RejectsFractionsThatLeaveAnEmptySide) {
  // With the floor formula any fraction that is not lost in 1 - f holds out at least one sample
  // (floor(10 * 0.999) = 9); only a fraction below double's resolution leaves none.
  EXPECT_EQ(split_for_validation(10, 0.001).validation, 1);
  expect_error([] { split_for_validation(10, 1e-17); },
               {"validation_split = 1e-17 leaves no validation samples out of 10",
                "expected a fraction that holds out at least one sample"});
  // floor(1 * 0.5) = 0 training rows.
  expect_error([] { split_for_validation(1, 0.5); }, {"leaves no training samples out of 1"});
  expect_error([] { split_for_validation(10, 0.95); }, {"leaves no training samples out of 10"});
}

bool is_permutation_of_iota(const std::vector<int64_t>& p) {
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] != static_cast<int64_t>(i)) return false;
  }
  return true;
}

TEST(EpochPermutation, IsAPermutation) {
  std::vector<int64_t> p;
  for (int64_t n : {0, 1, 2, 3, 17, 1000, 54000}) {
    epoch_permutation(n, 1337, 0, true, p);
    ASSERT_EQ(static_cast<int64_t>(p.size()), n);
    EXPECT_TRUE(is_permutation_of_iota(p)) << n;
  }
}

TEST(EpochPermutation, DeterministicAndDifferentPerEpochAndSeed) {
  std::vector<int64_t> a, b, c, d;
  epoch_permutation(1000, 1337, 3, true, a);
  epoch_permutation(1000, 1337, 3, true, b);
  EXPECT_EQ(a, b);
  epoch_permutation(1000, 1337, 4, true, c);
  EXPECT_NE(a, c);
  epoch_permutation(1000, 1338, 3, true, d);
  EXPECT_NE(a, d);
  // Reusing the output vector (as the fit loop does) gives the same answer as a fresh one.
  c = a;
  c.resize(5);
  epoch_permutation(1000, 1337, 3, true, c);
  EXPECT_EQ(a, c);
}

TEST(EpochPermutation, PinnedFirstValues) {
  // Pinned so that a change to the shuffle (which would change every user's run) is noticed. Recompute from the
  // Fisher-Yates definition in sharding.cpp if the change is intended.
  std::vector<int64_t> p;
  epoch_permutation(10, 1337, 0, true, p);
  std::vector<int64_t> expected(10);
  std::iota(expected.begin(), expected.end(), 0);
  Rng rng(hash_key(1337, 0x5348, 0));
  for (int64_t i = 9; i > 0; --i) std::swap(expected[i], expected[rng.below(static_cast<uint64_t>(i) + 1)]);
  EXPECT_EQ(p, expected);
  // And the literal values, so that a change in kernels/random.h is noticed too.
  EXPECT_EQ(p, (std::vector<int64_t>{6, 9, 1, 7, 2, 0, 4, 8, 5, 3}));
  epoch_permutation(10, 1337, 1, true, p);
  EXPECT_EQ(p, (std::vector<int64_t>{1, 9, 8, 2, 3, 4, 6, 5, 7, 0}));
}

TEST(EpochPermutation, ActuallyShuffles) {
  std::vector<int64_t> p;
  epoch_permutation(1000, 7, 0, true, p);
  int64_t fixed = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed += p[i] == i ? 1 : 0;
  EXPECT_LT(fixed, 10);  // a uniform permutation has ~1 fixed point
}

TEST(EpochPermutation, IdentityWithoutShuffle) {
  std::vector<int64_t> p = {9, 9, 9};
  epoch_permutation(100, 1337, 5, false, p);
  ASSERT_EQ(p.size(), 100u);
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(p[i], i);
}

TEST(SliceOf, SplitsEvenlyFirstRanksTakeTheRemainder) {
  // 10 over 4: 3, 3, 2, 2.
  const int64_t expected_count[] = {3, 3, 2, 2};
  const int64_t expected_offset[] = {0, 3, 6, 8};
  for (int r = 0; r < 4; ++r) {
    const Slice s = slice_of(10, r, 4);
    EXPECT_EQ(s.count, expected_count[r]);
    EXPECT_EQ(s.offset, expected_offset[r]);
  }
  const Slice empty = slice_of(2, 3, 4);
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.offset, 2);
}

TEST(SliceOf, RejectsBadArguments) {
  expect_error([] { slice_of(10, 0, 0); }, {"world size = 0", "at least 1"});
  expect_error([] { slice_of(10, 4, 4); }, {"rank = 4", "[0, 4)"});
  expect_error([] { slice_of(10, -1, 4); }, {"rank = -1"});
  expect_error([] { slice_of(-1, 0, 4); }, {"sample count = -1"});
}

TEST(ShardPlan, SlicesTileEveryGlobalBatchOverASweep) {
  for (int64_t n : {1, 2, 3, 5, 31, 32, 33, 100, 1437}) {
    for (int64_t batch : {1, 2, 3, 7, 32, 64, 1000}) {
      for (int world : {1, 2, 3, 4, 5, 8}) {
        std::vector<ShardPlan> plans;
        for (int r = 0; r < world; ++r) plans.emplace_back(n, batch, world, r);
        const int64_t steps = plans[0].steps();
        ASSERT_EQ(steps, (n + batch - 1) / batch);
        int64_t covered = 0;
        for (int64_t step = 0; step < steps; ++step) {
          const int64_t count = plans[0].batch_count(step);
          EXPECT_EQ(plans[0].batch_start(step), covered);
          EXPECT_EQ(count, step + 1 < steps ? batch : n - (steps - 1) * batch);
          int64_t next = 0, lo = count, hi = 0;
          for (int r = 0; r < world; ++r) {
            EXPECT_EQ(plans[r].steps(), steps);
            EXPECT_EQ(plans[r].batch_count(step), count);
            const Slice s = plans[r].slice(step);
            EXPECT_EQ(s.offset, next) << "n=" << n << " batch=" << batch << " P=" << world << " rank " << r;
            next += s.count;
            lo = std::min(lo, s.count);
            hi = std::max(hi, s.count);
            EXPECT_LE(s.count, plans[r].max_local_count());
          }
          EXPECT_EQ(next, count) << "slices must tile the global batch exactly";
          EXPECT_LE(hi - lo, 1) << "slice sizes differ by at most one";
          covered += count;
        }
        EXPECT_EQ(covered, n) << "nothing dropped, nothing duplicated";
      }
    }
  }
}

// What a rank's epoch sums count after k steps (a checkpoint's sample counts, a resume's redistribution): the sum of
// its slices, and over the ranks every sample of those steps.
TEST(ShardPlan, SamplesInFirstStepsSumTheSlicesOverASweep) {
  for (int64_t n : {1, 2, 3, 5, 31, 32, 33, 100, 1437}) {
    for (int64_t batch : {1, 2, 3, 7, 32, 64, 1000}) {
      for (int world : {1, 2, 3, 4, 5, 8}) {
        const int64_t steps = ShardPlan(n, batch, world, 0).steps();
        for (int r = 0; r < world; ++r) {
          const ShardPlan plan(n, batch, world, r);
          int64_t sum = 0;
          for (int64_t done = 0; done <= steps; ++done) {
            EXPECT_EQ(plan.samples_in_first_steps(done), sum)
                << "n=" << n << " batch=" << batch << " P=" << world << " rank " << r << " steps " << done;
            if (done < steps) sum += plan.slice(done).count;
          }
        }
        for (int64_t done = 0; done <= steps; ++done) {
          int64_t total = 0;
          for (int r = 0; r < world; ++r) total += ShardPlan(n, batch, world, r).samples_in_first_steps(done);
          EXPECT_EQ(total, std::min(done * batch, n));
        }
      }
    }
  }
}

TEST(ShardPlan, LastBatchKeepsTheRemainder) {
  const ShardPlan plan(100, 32, 1, 0);
  EXPECT_EQ(plan.steps(), 4);
  EXPECT_EQ(plan.batch_count(0), 32);
  EXPECT_EQ(plan.batch_count(3), 4);
  EXPECT_EQ(plan.batch_start(3), 96);
  EXPECT_EQ(plan.max_local_count(), 32);
}

TEST(ShardPlan, ARankCanHaveNoSamplesInTheLastBatch) {
  // 10 samples, batch 8: the last batch has 2 samples over 4 ranks -> 1, 1, 0, 0.
  const int64_t expected[] = {1, 1, 0, 0};
  for (int r = 0; r < 4; ++r) {
    const ShardPlan plan(10, 8, 4, r);
    ASSERT_EQ(plan.steps(), 2);
    EXPECT_EQ(plan.slice(0).count, 2);
    EXPECT_EQ(plan.slice(1).count, expected[r]);
    EXPECT_EQ(plan.max_local_count(), 2);
  }
}

TEST(ShardPlan, SmallDataSetGivesOneShortStep) {
  const ShardPlan plan(5, 32, 2, 0);
  EXPECT_EQ(plan.steps(), 1);
  EXPECT_EQ(plan.batch_count(0), 5);
  EXPECT_EQ(plan.max_local_count(), 3);
  EXPECT_EQ(ShardPlan(0, 32, 2, 1).steps(), 0);
}

TEST(ShardPlan, RejectsBadArguments) {
  expect_error([] { ShardPlan(100, 0, 1, 0); }, {"batch_size = 0", "at least 1"});
  expect_error([] { ShardPlan(100, 32, 0, 0); }, {"world size = 0"});
  expect_error([] { ShardPlan(100, 32, 2, 2); }, {"rank = 2", "[0, 2)"});
  expect_error([] { ShardPlan(100, 32, 2, -1); }, {"rank = -1"});
  expect_error([] { ShardPlan(-5, 32, 2, 0); }, {"= -5"});
  const ShardPlan plan(100, 32, 2, 0);
  expect_error([&] { plan.slice(4); }, {"step = 4", "[0, 4)"});
  expect_error([&] { plan.samples_in_first_steps(5); }, {"steps done = 5", "0 to 4"});
  expect_error([&] { plan.samples_in_first_steps(-1); }, {"steps done = -1"});
  expect_error([&] { plan.batch_count(-1); }, {"step = -1"});
}

}  // namespace
}  // namespace shardfit
