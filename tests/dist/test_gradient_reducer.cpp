// MPI tests of dist/gradient_reducer: the bucket layout, and that the reduced gradient is the global sum divided by
// the global sample count, for any rank count, bucket size and chunk limit; a layer's sums made in step order with
// the overlapped buckets. Not the optimizer.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dist/gradient_reducer.h"
#include "tests/support/mpi_test_env.h"
#include "tests/support/numeric_checks.h"

namespace shardfit {
namespace {

using shardfit::testing::all_close;
using shardfit::testing::world;

constexpr int64_t kFloatBytes = sizeof(float);

// A per-rank gradient whose sum over ranks has a closed form: g_r[i] = (r + 1) * a_i + b_i.
double rank_gradient(int rank, int64_t i) {
  const double a = static_cast<double>(i % 13) * 0.25 - 1.0;
  const double b = std::sin(static_cast<double>(i));
  return static_cast<double>(rank + 1) * a + b;
}
double summed_gradient(int ranks, int64_t i) {
  const double a = static_cast<double>(i % 13) * 0.25 - 1.0;
  const double b = std::sin(static_cast<double>(i));
  return static_cast<double>(ranks) * static_cast<double>(ranks + 1) / 2.0 * a + static_cast<double>(ranks) * b;
}

// One sample's gradient, for the "P ranks x B/P samples == 1 rank x B" invariant.
double sample_gradient(int64_t sample, int64_t i) { return std::cos(0.37 * static_cast<double>(sample * 31 + i)); }

TEST(GradientReducerTest, BucketsTileTheBufferFromTheEnd) {
  for (const int64_t count : {0, 1, 10, 1000, 1001}) {
    for (const int64_t bucket_count : {1, 3, 7, 10, 1000, 4096}) {
      std::vector<float> grads(static_cast<size_t>(count));
      const GradientReducer reducer(world(), grads, bucket_count * kFloatBytes);
      const auto buckets = reducer.buckets();
      EXPECT_EQ(reducer.bucket_bytes(), bucket_count * kFloatBytes);
      EXPECT_EQ(static_cast<int64_t>(buckets.size()), (count + bucket_count - 1) / bucket_count)
          << "count " << count << " bucket " << bucket_count;
      int64_t end = count;
      for (size_t k = 0; k < buckets.size(); ++k) {
        EXPECT_EQ(buckets[k].offset + buckets[k].count, end) << "bucket " << k << " is not adjacent";
        EXPECT_GE(buckets[k].count, 1);
        EXPECT_LE(buckets[k].count, bucket_count);
        // Only the last bucket (the start of the buffer) may be short.
        if (k + 1 < buckets.size()) {
          EXPECT_EQ(buckets[k].count, bucket_count);
        }
        end = buckets[k].offset;
      }
      EXPECT_EQ(end, 0) << "count " << count << " bucket " << bucket_count;
    }
  }
}

TEST(GradientReducerTest, BucketBytesAreRoundedDownToWholeFloats) {
  std::vector<float> grads(10);
  const GradientReducer reducer(world(), grads, 4 * kFloatBytes + 3);
  EXPECT_EQ(reducer.bucket_bytes(), 4 * kFloatBytes);
  EXPECT_EQ(reducer.buckets().size(), 3U);
  EXPECT_THROW(GradientReducer(world(), grads, 3), Error);
  EXPECT_THROW(GradientReducer(world(), grads, 0), Error);
  EXPECT_THROW(GradientReducer(world(), grads, -4), Error);
}

TEST(GradientReducerTest, ReducesToTheGlobalSumOverTheGlobalCount) {
  Comm& comm = world();
  for (const int64_t count : {1, 10, 1000, 1001, 70001}) {
    // Below the buffer, not dividing it, equal to it, and the default.
    for (const int64_t bucket_bytes :
         {kFloatBytes, 7 * kFloatBytes, 256 * kFloatBytes, count * kFloatBytes, GradientReducer::kDefaultBucketBytes}) {
      // At most 2000 buckets: 70001 one-float allreduces add nothing the 1001-float case does not check, and on a
      // busy 2-core machine, where every allreduce waits for both ranks to be scheduled, they took over 60 s.
      if (count * kFloatBytes / bucket_bytes > 2000) continue;
      std::vector<float> grads(static_cast<size_t>(count));
      GradientReducer reducer(comm, grads, bucket_bytes);
      const int64_t global_count = 3 * comm.size() + 1;
      std::vector<double> expected(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) {
        grads[i] = static_cast<float>(rank_gradient(comm.rank(), i));
        expected[i] = summed_gradient(comm.size(), i) / static_cast<double>(global_count);
      }
      reducer.reduce(global_count);
      // Inputs rounded to float once, P-term sums, one scaling: a few eps of the largest magnitude.
      EXPECT_TRUE(all_close(grads, expected, 4.0 * comm.size()))
          << "count " << count << ", bucket bytes " << bucket_bytes;
    }
  }
}

TEST(GradientReducerTest, ChunkedBucketsReduceTheSame) {
  Comm& comm = world();
  const int64_t saved = comm.max_chunk_count();
  comm.set_max_chunk_count(5);  // every bucket of 64 goes through Comm in 13 calls, the last of 4 elements
  const int64_t count = 1000;
  std::vector<float> grads(count);
  GradientReducer reducer(comm, grads, 64 * kFloatBytes);
  std::vector<double> expected(count);
  for (int64_t i = 0; i < count; ++i) {
    grads[i] = static_cast<float>(rank_gradient(comm.rank(), i));
    expected[i] = summed_gradient(comm.size(), i) / 2.0;
  }
  reducer.reduce(2);
  comm.set_max_chunk_count(saved);
  EXPECT_TRUE(all_close(grads, expected, 4.0 * comm.size()));
}

TEST(GradientReducerTest, ShardedBatchGivesTheSameMeanGradientAsOneRank) {
  // STYLE.md #8: P ranks x B/P samples == 1 rank x B. Each rank sums the per-sample gradients of its contiguous
  // slice (sizes differ by at most one; with B < P some slices are empty), the reducer divides by B, and the
  // result must be the mean over all B samples computed on one rank.
  Comm& comm = world();
  const int64_t count = 257;
  for (const int64_t batch : {1, 3, 32, 33}) {
    const int64_t begin = batch * comm.rank() / comm.size();
    const int64_t end = batch * (comm.rank() + 1) / comm.size();
    std::vector<float> grads(count, 0.0F);
    for (int64_t s = begin; s < end; ++s) {
      for (int64_t i = 0; i < count; ++i) grads[i] += static_cast<float>(sample_gradient(s, i));
    }
    GradientReducer reducer(comm, grads, 100 * kFloatBytes);
    reducer.reduce(batch);

    std::vector<double> mean(count, 0.0);
    for (int64_t s = 0; s < batch; ++s) {
      for (int64_t i = 0; i < count; ++i) mean[i] += sample_gradient(s, i) / static_cast<double>(batch);
    }
    // Float accumulation of up to B terms of magnitude <= 1 on each rank, then the allreduce.
    EXPECT_TRUE(all_close(grads, mean, 2.0 * static_cast<double>(batch + comm.size()), 1.0)) << "batch " << batch;
  }
}

TEST(GradientReducerTest, RecordsCommunicationTime) {
  Comm& comm = world();
  std::vector<float> grads(100000, 1.0F);
  GradientReducer reducer(comm, grads, 16384 * kFloatBytes);
  EXPECT_EQ(reducer.seconds(), 0.0);
  EXPECT_EQ(reducer.reduce_count(), 0);
  reducer.reduce(comm.size());
  reducer.reduce(1);
  EXPECT_EQ(reducer.reduce_count(), 2);
  EXPECT_GE(reducer.last_seconds(), 0.0);
  EXPECT_GE(reducer.seconds(), reducer.last_seconds());
  EXPECT_LT(reducer.seconds(), 60.0);
  if (comm.size() == 1) {
    EXPECT_EQ(reducer.seconds(), 0.0) << "one rank: no communication at all";
  }
  EXPECT_EQ(grads[0], static_cast<float>(comm.size()));  // (P * 1 / P) summed again over P ranks, divided by 1
  reducer.reset_timing();
  EXPECT_EQ(reducer.seconds(), 0.0);
  EXPECT_EQ(reducer.last_seconds(), 0.0);
  EXPECT_EQ(reducer.reduce_count(), 0);
}

// Overlap (gradient_reducer.h, note 9): the communication thread runs the same allreduces on the same values, so
// the result is the blocking reducer's bit for bit, however backward's ready points fall (none, some repeated, one
// inside a bucket) and step after step.
TEST(GradientReducerTest, OverlapThreadReducesTheSameBitsAsBlocking) {
  Comm& comm = world();
  const int64_t count = 1000;
  for (const int64_t bucket_count : {1, 7, 64, 1000}) {
    std::vector<float> blocking_grads(count);
    std::vector<float> overlap_grads(count);
    GradientReducer blocking(comm, blocking_grads, bucket_count * kFloatBytes);
    GradientReducer overlapped(comm, overlap_grads, bucket_count * kFloatBytes, GradientReducer::Overlap::kThread);
    EXPECT_EQ(overlapped.overlap(), GradientReducer::Overlap::kThread);
    for (int step = 0; step < 3; ++step) {
      for (int64_t i = 0; i < count; ++i) {
        blocking_grads[i] = overlap_grads[i] = static_cast<float>(rank_gradient(comm.rank(), i + step) / 3.0);
      }
      blocking.reduce(3 + step);
      overlapped.begin_step();
      if (step != 1) {  // step 1: no ready point at all, start() hands everything over
        for (const int64_t first : {count, int64_t{990}, int64_t{990}, int64_t{600}, int64_t{333}, int64_t{0}}) {
          overlapped.ready(first);
        }
      }
      overlapped.start(3 + step);
      overlapped.finish();
      EXPECT_EQ(overlap_grads, blocking_grads) << "bucket " << bucket_count << ", step " << step;
    }
    EXPECT_EQ(overlapped.reduce_count(), 3);
    if (comm.size() == 1) {
      EXPECT_EQ(overlapped.seconds(), 0.0) << "one rank: no thread, no communication";
    }
  }
}

// A layer's sums during backward (design note 13): between begin_step() and finish() the overlapped reducer makes
// them on its thread after the buckets handed over before them, with its buckets still reduced bit for bit as the
// blocking reducer's; before begin_step() and after finish() they are made at once. Each sum is the exact sum over
// ranks (small integers in double), and every call is one collective: the buckets' plus the sums' (none at one
// rank). The ready points and sums interleave as a Dense, BatchNormalization, Dense backward's would.
// The buckets wholly inside [first, end): what ready(first) hands over.
int64_t buckets_from(const GradientReducer& reducer, int64_t first) {
  int64_t count = 0;
  for (const auto& bucket : reducer.buckets()) count += bucket.offset >= first ? 1 : 0;
  return count;
}

TEST(GradientReducerTest, SumsAcrossRanksKeepStepOrderWithTheBuckets) {
  Comm& comm = world();
  const int ranks = comm.size();
  const int64_t count = 1000;
  const auto sum_values = [&](double base) {
    std::vector<double> values(5);
    for (size_t j = 0; j < values.size(); ++j) values[j] = base + static_cast<double>(comm.rank() * 10 + j);
    return values;
  };
  // sum over r of (base + 10 r + j) = P base + 10 P (P - 1) / 2 + P j
  const auto expected_sum = [&](double base, size_t j) {
    return ranks * base + 10.0 * ranks * (ranks - 1) / 2.0 + static_cast<double>(ranks) * static_cast<double>(j);
  };
  for (const int64_t bucket_count : {1, 64, 1000}) {
    std::vector<float> blocking_grads(count);
    std::vector<float> overlap_grads(count);
    GradientReducer blocking(comm, blocking_grads, bucket_count * kFloatBytes);
    GradientReducer overlapped(comm, overlap_grads, bucket_count * kFloatBytes, GradientReducer::Overlap::kThread);
    for (int step = 0; step < 2; ++step) {
      for (int64_t i = 0; i < count; ++i) {
        blocking_grads[i] = overlap_grads[i] = static_cast<float>(rank_gradient(comm.rank(), i + step) / 3.0);
      }
      blocking.reduce(3);
      const int64_t calls = comm.collective_calls();
      std::vector<double> before = sum_values(1.0);
      overlapped.sum_across_ranks(before);  // forward's: outside the step, at once
      overlapped.begin_step();
      overlapped.ready(700);
      std::vector<double> during = sum_values(2.0 + step);
      overlapped.sum_across_ranks(during);  // after the buckets of [700, end), before the rest
      // When it returns, the buckets handed over before it are made too: it waited its turn behind them (a sum
      // made at once on this thread could return while they are still in flight).
      if (ranks > 1) {
        EXPECT_EQ(comm.collective_calls() - calls, 1 + buckets_from(overlapped, 700) + 1)
            << "bucket " << bucket_count << ": the sum did not wait for the buckets before it";
      }
      overlapped.ready(600);
      overlapped.ready(0);
      std::vector<double> last = sum_values(-3.0);
      overlapped.sum_across_ranks(last);  // after every bucket
      if (ranks > 1) {
        EXPECT_EQ(comm.collective_calls() - calls, static_cast<int64_t>(overlapped.buckets().size()) + 3)
            << "bucket " << bucket_count << ": the last sum did not wait for every bucket";
      }
      overlapped.start(3);
      overlapped.finish();
      std::vector<double> after = sum_values(4.0);
      overlapped.sum_across_ranks(after);  // after the step, at once
      EXPECT_EQ(overlap_grads, blocking_grads) << "bucket " << bucket_count << ", step " << step;
      for (size_t j = 0; j < before.size(); ++j) {
        EXPECT_EQ(before[j], expected_sum(1.0, j)) << j;
        EXPECT_EQ(during[j], expected_sum(2.0 + step, j)) << j;
        EXPECT_EQ(last[j], expected_sum(-3.0, j)) << j;
        EXPECT_EQ(after[j], expected_sum(4.0, j)) << j;
      }
      EXPECT_EQ(comm.collective_calls() - calls,
                ranks > 1 ? static_cast<int64_t>(overlapped.buckets().size()) + 4 : int64_t{0})
          << "one call per bucket and per sum";
    }
  }
}

TEST(GradientReducerTest, RejectsAnEmptyGlobalBatch) {
  std::vector<float> grads(10, 1.0F);
  GradientReducer reducer(world(), grads);
  EXPECT_THROW(reducer.reduce(0), Error);
  EXPECT_THROW(reducer.reduce(-3), Error);
  EXPECT_EQ(grads[0], 1.0F) << "a rejected step must leave the gradients untouched";
  try {
    reducer.reduce(0);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("global sample count is 0"), std::string::npos) << e.what();
  }
}

// Control values in the floats after the gradients ride with bucket 0 (design note 8): summed over ranks in the
// same MPI call, never divided by the global count, and the gradients are reduced exactly as without them. At one
// rank nothing is called at all.
TEST(GradientReducerTest, ControlValuesRideWithBucketZeroSummedNotDivided) {
  Comm& comm = world();
  for (const int64_t count : {0, 1, 100, 1000}) {
    std::vector<float> buffer(static_cast<size_t>(count + 3));  // 3 control floats after the gradients
    const std::span<float> grads(buffer.data(), static_cast<size_t>(count));
    const std::span<float> control(buffer.data() + count, 3);
    GradientReducer reducer(comm, grads, control, 64 * kFloatBytes);
    ASSERT_GE(reducer.buckets().size(), 1U) << "the control values need a call even without gradients";
    std::vector<double> expected(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      grads[i] = static_cast<float>(rank_gradient(comm.rank(), i));
      expected[i] = summed_gradient(comm.size(), i) / 5.0;
    }
    control[0] = static_cast<float>(comm.rank() + 1);
    control[1] = comm.rank() == comm.size() - 1 ? 1.0F : 0.0F;
    control[2] = 0.5F;
    const int64_t calls = comm.collective_calls();
    reducer.reduce(5);
    EXPECT_EQ(comm.collective_calls() - calls,
              comm.size() > 1 ? static_cast<int64_t>(reducer.buckets().size()) : int64_t{0})
        << "one call per bucket, the control values inside bucket 0's";
    EXPECT_TRUE(all_close(grads, expected, 4.0 * comm.size())) << count;
    const int ranks = comm.size();
    EXPECT_EQ(control[0], static_cast<float>(ranks) * static_cast<float>(ranks + 1) / 2.0F) << count;  // 1 + ... + P
    EXPECT_EQ(control[1], 1.0F) << count;
    EXPECT_EQ(control[2], 0.5F * static_cast<float>(comm.size())) << count;
  }
  // Anywhere else than right after the gradients, bucket 0 could not reach them.
  std::vector<float> grads(10);
  std::vector<float> elsewhere(2);
  EXPECT_THROW(GradientReducer(comm, grads, elsewhere), Error);
}

// --reduce-dtype bfloat16 (design note 12): the same buffer reduced by a bfloat16 and a float32 reducer. Bucket 0 is
// cut to kBfloat16FirstBucketCount gradients and stays f32, so its gradients and the control values riding in it are
// the float32 reducer's bit for bit, in the same number of calls as buckets. The other buckets travel as bf16, half
// the bytes; each sum is within gamma(P) = P u / (1 - P u), u = 2^-8, of the sum of the magnitudes: one rounding of
// each rank's gradient to bf16 and P - 1 of the partial sums, each at most u relative (Higham's bound for
// recursive summation), then the f32 scaling's own rounding. One rank sends nothing and rounds nothing. Every rank
// ends with the same bits.
TEST(GradientReducerTest, Bfloat16TravelsHalfTheBytesWithinItsRoundingBound) {
  Comm& comm = world();
  const int ranks = comm.size();
  constexpr int64_t kCount = 20000;
  constexpr int64_t kFirst = GradientReducer::kBfloat16FirstBucketCount;
  // A gradient spread over magnitudes 2^-3..2^3, with terms that cancel across ranks.
  const auto value = [](int rank, int64_t i) {
    return static_cast<float>(rank_gradient(rank, i) * std::ldexp(1.0, static_cast<int>(i % 7) - 3));
  };
  std::vector<float> half(kCount + 3);
  std::vector<float> full(kCount + 3);
  std::vector<float> overlapped(kCount + 3);
  for (int64_t i = 0; i < kCount; ++i) half[i] = full[i] = overlapped[i] = value(comm.rank(), i);
  for (auto* buffer : {&half, &full, &overlapped}) {
    (*buffer)[kCount] = 0.1F * static_cast<float>(comm.rank() + 1);  // not a bf16 number: must stay exact
    (*buffer)[kCount + 1] = comm.rank() == 0 ? 1.0F : 0.0F;
    (*buffer)[kCount + 2] = 1.0F / 3.0F;
  }
  GradientReducer bf16(comm, std::span<float>(half.data(), kCount), std::span<float>(half.data() + kCount, 3),
                       6000 * kFloatBytes, GradientReducer::Overlap::kOff, GradientReducer::ReduceDtype::kBfloat16);
  GradientReducer f32(comm, std::span<float>(full.data(), kCount), std::span<float>(full.data() + kCount, 3),
                      6000 * kFloatBytes, GradientReducer::Overlap::kOff, GradientReducer::ReduceDtype::kFloat32);
  ASSERT_EQ(bf16.buckets().size(), 4U);
  EXPECT_EQ(bf16.buckets()[0].offset, kCount - kFirst);
  EXPECT_EQ(bf16.buckets()[0].count, kFirst);
  EXPECT_EQ(bf16.buckets()[1].count, 6000);
  EXPECT_EQ(bf16.buckets()[3].offset, 0);
  EXPECT_EQ(bf16.wire_bytes(), kFirst * 4 + (kCount - kFirst) * 2);
  EXPECT_EQ(f32.wire_bytes(), kCount * 4);

  const int64_t calls = comm.collective_calls();
  bf16.reduce(5);
  EXPECT_EQ(comm.collective_calls() - calls, ranks > 1 ? int64_t{4} : int64_t{0}) << "one call per bucket";
  f32.reduce(5);
  {
    // On the communication thread (overlap) the same calls on the same values: the same bits.
    GradientReducer threaded(comm, std::span<float>(overlapped.data(), kCount),
                             std::span<float>(overlapped.data() + kCount, 3), 6000 * kFloatBytes,
                             GradientReducer::Overlap::kThread, GradientReducer::ReduceDtype::kBfloat16);
    threaded.reduce(5);
  }
  EXPECT_EQ(overlapped, half) << "overlap on and off agree bit for bit under bfloat16";
  for (int64_t j = kCount; j < kCount + 3; ++j) EXPECT_EQ(half[j], full[j]) << "control value " << j - kCount;
  for (int64_t i = kCount - kFirst; i < kCount; ++i) ASSERT_EQ(half[i], full[i]) << "bucket 0, gradient " << i;

  const double u = std::ldexp(1.0, -8);
  const double gamma = ranks * u / (1.0 - ranks * u);
  int64_t rounded = 0;
  for (int64_t i = 0; i < kCount - kFirst; ++i) {
    double exact = 0.0;
    double magnitudes = 0.0;
    for (int r = 0; r < ranks; ++r) {
      exact += value(r, i);
      magnitudes += std::fabs(value(r, i));
    }
    exact /= 5.0;
    magnitudes /= 5.0;
    if (ranks == 1) {
      ASSERT_EQ(half[i], full[i]) << "one rank rounds nothing, gradient " << i;
      continue;
    }
    const double tolerance = gamma * magnitudes + std::ldexp(std::fabs(exact), -22);
    ASSERT_LE(std::fabs(half[i] - exact), tolerance) << "gradient " << i << " at " << ranks << " ranks";
    rounded += half[i] != full[i] ? 1 : 0;
  }
  if (ranks > 1) {
    EXPECT_GT(rounded, (kCount - kFirst) / 2) << "the bf16 buckets went through bf16";
  }
  EXPECT_NO_THROW(comm.check_same_everywhere("bf16-reduced gradients", std::span<const float>(half)));
}

TEST(GradientReducerTest, LayoutMismatchFailsOnEveryRankAtConstruction) {
  Comm& comm = world();
  if (comm.size() == 1) GTEST_SKIP() << "needs two ranks to differ";
  const int odd_one = comm.size() - 1;
  std::vector<float> grads(comm.rank() == odd_one ? 101 : 100);
  std::optional<AgreedFailure> caught;
  try {
    const GradientReducer reducer(comm, grads, 16 * kFloatBytes);
  } catch (const AgreedFailure& e) {
    caught = e;
  }
  EXPECT_TRUE(caught.has_value()) << "rank " << comm.rank() << " did not throw";
  if (caught) {
    EXPECT_EQ(caught->failed_rank(), odd_one);
    const std::string message = caught->what();
    EXPECT_NE(message.find("error on rank " + std::to_string(odd_one) + " ("), std::string::npos) << message;
    EXPECT_NE(message.find("gradient buffer layout differs across ranks: rank " + std::to_string(odd_one) +
                           " has 101 gradients in buckets of 16 but rank 0 has 100 in buckets of 16"),
              std::string::npos)
        << message;
  }
}

}  // namespace
}  // namespace shardfit
