// MPI tests of dist/comm: collectives, chunking, agreement and error formatting, stated as invariants that hold
// for any rank count (run at 1, 2 and 4 ranks). Not the abort path: that ends the job (tests/dist/test_abort.cpp).
#include <gtest/gtest.h>

#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "kernels/precision.h"
#include "tests/support/mpi_test_env.h"

namespace shardfit {
namespace {

using shardfit::testing::world;

// Lowers the chunk limit for one test and restores it, so the chunked path runs on small buffers.
class ChunkLimit {
 public:
  explicit ChunkLimit(int64_t count) : saved_(world().max_chunk_count()) { world().set_max_chunk_count(count); }
  ~ChunkLimit() { world().set_max_chunk_count(saved_); }

 private:
  int64_t saved_;
};

// Collective: true on every rank when every rank holds the same text.
bool same_on_every_rank(const std::string& text) {
  std::string root_text = text;
  world().broadcast(root_text, 0);
  const int64_t differs = world().allreduce_max(static_cast<int64_t>(root_text != text ? 1 : 0));
  return differs == 0;
}

// Runs agree() with this rank's error (or none) and returns what it threw.
std::optional<AgreedFailure> agree_with(bool fail_here, const std::string& what, const std::string& hint) {
  std::exception_ptr error;
  if (fail_here) {
    try {
      SF_FAIL(what, hint);
    } catch (...) {
      error = std::current_exception();
    }
  }
  try {
    world().agree(error);
  } catch (const AgreedFailure& e) {
    return e;
  }
  return std::nullopt;
}

constexpr std::array<int64_t, 6> kCounts = {0, 1, 2, 7, 1000, 65537};

TEST(CommTest, RanksAndSizesAreConsistent) {
  Comm& comm = world();
  EXPECT_GE(comm.size(), 1);
  EXPECT_GE(comm.rank(), 0);
  EXPECT_LT(comm.rank(), comm.size());
  EXPECT_EQ(comm.is_root(), comm.rank() == 0);
  EXPECT_GE(comm.local_rank(), 0);
  EXPECT_LT(comm.local_rank(), comm.local_size());
  EXPECT_LE(comm.local_size(), comm.size());

  const std::vector<int64_t> ranks = comm.allgather(static_cast<int64_t>(comm.rank()));
  ASSERT_EQ(ranks.size(), static_cast<size_t>(comm.size()));
  for (int r = 0; r < comm.size(); ++r) EXPECT_EQ(ranks[r], r);
  // Local sizes over all ranks add up to the world when every node is counted once per rank.
  const std::vector<double> local_shares = comm.allgather(1.0 / comm.local_size());
  double nodes = 0.0;
  for (double share : local_shares) nodes += share;
  EXPECT_NEAR(nodes, std::round(nodes), 1e-9);
}

TEST(CommTest, AllreduceOfTheSameValuesIsSizeTimesThem) {
  Comm& comm = world();
  const auto p = static_cast<double>(comm.size());
  for (int64_t count : kCounts) {
    std::vector<float> floats(static_cast<size_t>(count));
    std::vector<double> doubles(static_cast<size_t>(count));
    std::vector<int64_t> ints(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      floats[i] = static_cast<float>(i % 97) * 0.125F - 3.0F;  // P * x is exact in float for these
      doubles[i] = static_cast<double>(i) * 0.1;
      ints[i] = i * 1000003 - 17;
    }
    const std::vector<float> x_floats = floats;
    const std::vector<double> x_doubles = doubles;
    comm.allreduce_sum(std::span<float>(floats));
    comm.allreduce_sum(std::span<double>(doubles));
    comm.allreduce_sum(std::span<int64_t>(ints));
    for (int64_t i = 0; i < count; ++i) {
      EXPECT_EQ(floats[i], static_cast<float>(p * x_floats[i])) << "count " << count << " element " << i;
      EXPECT_NEAR(doubles[i], p * x_doubles[i], 1e-12 * std::max(1.0, p * x_doubles[i])) << "element " << i;
      EXPECT_EQ(ints[i], comm.size() * (i * 1000003 - 17)) << "element " << i;
    }
  }
}

TEST(CommTest, AllreduceOfRankDependentValuesMatchesTheClosedForm) {
  Comm& comm = world();
  const int64_t p = comm.size();
  const int64_t rank_sum = p * (p - 1) / 2;
  for (int64_t count : kCounts) {
    std::vector<float> floats(static_cast<size_t>(count));
    std::vector<int64_t> ints(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      floats[i] = static_cast<float>(comm.rank()) + 0.5F * static_cast<float>(i % 31);
      ints[i] = comm.rank() * i;
    }
    comm.allreduce_sum(std::span<float>(floats));
    comm.allreduce_sum(std::span<int64_t>(ints));
    for (int64_t i = 0; i < count; ++i) {
      EXPECT_EQ(floats[i], static_cast<float>(rank_sum) + 0.5F * static_cast<float>(p * (i % 31)))
          << "count " << count << " element " << i;
      EXPECT_EQ(ints[i], rank_sum * i);
    }
  }
}

TEST(CommTest, ScalarReductions) {
  Comm& comm = world();
  const int64_t p = comm.size();
  const int64_t r = comm.rank();
  const int64_t rank_sum = p * (p - 1) / 2;  // exact: one of p, p - 1 is even
  EXPECT_EQ(comm.allreduce_sum(static_cast<double>(r) + 0.5), static_cast<double>(rank_sum) + 0.5 * p);
  EXPECT_EQ(comm.allreduce_sum(r + 1), p * (p + 1) / 2);
  EXPECT_EQ(comm.allreduce_max(static_cast<double>(r) - 0.25), static_cast<double>(p - 1) - 0.25);
  EXPECT_EQ(comm.allreduce_max(-r), int64_t{0});
  EXPECT_EQ(comm.allreduce_min(static_cast<double>(r) - 0.25), -0.25);
  EXPECT_EQ(comm.allreduce_min(-r), -(p - 1));
  // Values beyond the int range survive (counts are int64 here, never truncated to int).
  EXPECT_EQ(comm.allreduce_sum(int64_t{INT_MAX} + 1), p * (int64_t{INT_MAX} + 1));

  const std::vector<double> values = comm.allgather(static_cast<double>(r) * 1.5);
  for (int64_t k = 0; k < p; ++k) EXPECT_EQ(values[k], static_cast<double>(k) * 1.5);
  comm.barrier();
}

TEST(CommTest, ChunkedCollectivesGiveTheSameResultsAsOneCall) {
  Comm& comm = world();
  const int64_t p = comm.size();
  const int64_t rank_sum = p * (p - 1) / 2;
  for (int64_t chunk : {int64_t{1}, int64_t{3}, int64_t{64}, int64_t{999}, int64_t{1000}}) {
    const ChunkLimit limit(chunk);
    const int64_t count = 1000;  // chunk 3 and 64 leave a remainder, 999 leaves one element, 1000 is exact
    std::vector<float> floats(count);
    std::vector<double> doubles(count);
    for (int64_t i = 0; i < count; ++i) {
      floats[i] = static_cast<float>(comm.rank() + i);
      doubles[i] = static_cast<double>(comm.rank()) * 0.5 + static_cast<double>(i);
    }
    comm.allreduce_sum(std::span<float>(floats));
    comm.allreduce_sum(std::span<double>(doubles));
    int64_t wrong = 0;
    for (int64_t i = 0; i < count; ++i) {
      wrong += floats[i] != static_cast<float>(rank_sum + p * i) ? 1 : 0;
      wrong += doubles[i] != 0.5 * static_cast<double>(rank_sum) + static_cast<double>(p * i) ? 1 : 0;
    }
    EXPECT_EQ(wrong, 0) << "chunk " << chunk;

    // Broadcast through the same chunking, from the last rank.
    const int root = comm.size() - 1;
    std::vector<float> values(count, comm.rank() == root ? 0.0F : -1.0F);
    if (comm.rank() == root) {
      for (int64_t i = 0; i < count; ++i) values[i] = static_cast<float>(i) * 0.25F;
    }
    comm.broadcast(std::span<float>(values), root);
    wrong = 0;
    for (int64_t i = 0; i < count; ++i) wrong += values[i] != static_cast<float>(i) * 0.25F ? 1 : 0;
    EXPECT_EQ(wrong, 0) << "broadcast, chunk " << chunk;

    std::string text = comm.rank() == root ? std::string(777, 'x') + "end" : "short";
    comm.broadcast(text, root);
    EXPECT_EQ(text, std::string(777, 'x') + "end") << "chunk " << chunk;
  }
  EXPECT_EQ(comm.max_chunk_count(), Comm::kMaxChunkCount);
}

// The bf16 sum (a user MPI_Op adding in f32 and rounding to bf16): values whose every partial sum is a bf16 number
// (integers below 256 in magnitude) add exactly, in any grouping MPI picks, also when the call is cut into chunks;
// a sum that is not one rounds to nearest even; every rank gets the same bits.
TEST(CommTest, Bf16SumAddsInF32AndRoundsToBf16) {
  Comm& comm = world();
  const int ranks = comm.size();
  for (const int64_t chunk : {Comm::kMaxChunkCount, int64_t{7}}) {
    const ChunkLimit limit(chunk);
    std::vector<uint16_t> values(50);
    for (size_t i = 0; i < values.size(); ++i) {
      values[i] = to_bf16(static_cast<float>((comm.rank() + 1) * (static_cast<int>(i % 9) - 4)));
    }
    comm.allreduce_sum_bf16(values);
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(from_bf16(values[i]), static_cast<float>(ranks * (ranks + 1) / 2 * (static_cast<int>(i % 9) - 4)))
          << "element " << i << ", chunk " << chunk;
    }
  }
  // 256 + 1 is not a bf16 number (8 significant bits, a spacing of 2 from 256 up): at 2 ranks 256 + 1 is a tie and
  // rounds to the even 256. At 4 the grouping MPI picks decides (1 + 1 first gives 258); whatever it is, every rank
  // gets the same.
  std::vector<uint16_t> tie = {to_bf16(comm.is_root() ? 256.0F : 1.0F)};
  comm.allreduce_sum_bf16(tie);
  if (comm.size() == 2) {
    EXPECT_EQ(from_bf16(tie[0]), 256.0F);
  }
  std::vector<float> as_float = {from_bf16(tie[0])};
  EXPECT_NO_THROW(comm.check_same_everywhere("the bf16 sum", as_float));
}

TEST(CommTest, ChunkLimitMustBePositiveAndFitAnInt) {
  EXPECT_THROW(world().set_max_chunk_count(0), Error);
  EXPECT_THROW(world().set_max_chunk_count(Comm::kMaxChunkCount + 1), Error);
  EXPECT_EQ(world().max_chunk_count(), Comm::kMaxChunkCount);
}

TEST(CommTest, BroadcastFromEveryRoot) {
  Comm& comm = world();
  for (int root = 0; root < comm.size(); ++root) {
    const bool is_root = comm.rank() == root;
    std::vector<float> floats = {is_root ? 1.5F : 0.0F, is_root ? -2.0F : 0.0F};
    std::vector<double> doubles = {is_root ? 1e300 : 0.0};
    std::vector<int64_t> ints = {is_root ? int64_t{1} << 40 : 0, is_root ? -root : 99};
    std::vector<std::byte> bytes = {std::byte{is_root ? uint8_t{0xAB} : uint8_t{0}}};
    // The root's length wins, longer or shorter than the receivers' strings, and it may be empty.
    std::string text = is_root ? std::string(static_cast<size_t>(root) * 3, 'a' + static_cast<char>(root)) : "xyz!";
    comm.broadcast(std::span<float>(floats), root);
    comm.broadcast(std::span<double>(doubles), root);
    comm.broadcast(std::span<int64_t>(ints), root);
    comm.broadcast(std::span<std::byte>(bytes), root);
    comm.broadcast(text, root);
    const int64_t value = comm.broadcast(static_cast<int64_t>(is_root ? 42 + root : -1), root);

    EXPECT_EQ(floats, (std::vector<float>{1.5F, -2.0F})) << "root " << root;
    EXPECT_EQ(doubles[0], 1e300);
    EXPECT_EQ(ints, (std::vector<int64_t>{int64_t{1} << 40, -root}));
    EXPECT_EQ(bytes[0], std::byte{0xAB});
    EXPECT_EQ(text, std::string(static_cast<size_t>(root) * 3, 'a' + static_cast<char>(root)));
    EXPECT_EQ(value, 42 + root);
  }
  EXPECT_THROW(comm.broadcast(static_cast<int64_t>(1), comm.size()), Error);
  EXPECT_THROW(comm.broadcast(static_cast<int64_t>(1), -1), Error);
}

TEST(CommTest, GatherTextToRootKeepsRankOrderAndLengths) {
  Comm& comm = world();
  // Rank r sends r copies of a rank-specific letter (rank 0 an empty text), plus a '|' and a NUL byte inside.
  const auto text_of = [](int r) {
    std::string text(static_cast<size_t>(r), static_cast<char>('a' + r));
    if (r % 2 == 1) text += std::string("|\0z", 3);
    return text;
  };
  const std::vector<std::string> texts = comm.gather_text_to_root(text_of(comm.rank()));
  if (!comm.is_root()) {
    EXPECT_TRUE(texts.empty());
    return;
  }
  ASSERT_EQ(static_cast<int>(texts.size()), comm.size());
  for (int r = 0; r < comm.size(); ++r) EXPECT_EQ(texts[static_cast<size_t>(r)], text_of(r)) << "rank " << r;
}

TEST(CommTest, MpiErrorsBecomeErrorsNamingTheCall) {
  // Every rank passes the same invalid root, so each gets the error locally and none waits for another.
  int value = 0;
  try {
    MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT, world().size() + 5, world().handle()));
    ADD_FAILURE() << "MPI_Bcast with an invalid root did not fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MPI_Bcast(&value, 1, MPI_INT, world().size() + 5, world().handle())"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("failed: "), std::string::npos) << e.what();
    EXPECT_NE(e.where().find("test_comm.cpp:"), std::string::npos) << e.where();
  }
}

TEST(CommTest, ChecksumSeesEveryBit) {
  const std::vector<float> a = {1.0F, 2.0F, 3.0F};
  const std::vector<float> swapped = {2.0F, 1.0F, 3.0F};
  const std::vector<float> zero = {0.0F};
  const std::vector<float> negative_zero = {-0.0F};
  const std::vector<float> longer = {1.0F, 2.0F, 3.0F, 0.0F};
  EXPECT_EQ(float_checksum(a), float_checksum(std::vector<float>(a)));
  EXPECT_NE(float_checksum(a), float_checksum(swapped));
  EXPECT_NE(float_checksum(zero), float_checksum(negative_zero));
  EXPECT_NE(float_checksum(a), float_checksum(longer));
  EXPECT_NE(float_checksum({}), float_checksum(zero));
  std::vector<float> one_ulp = a;
  one_ulp[1] = std::nextafter(one_ulp[1], 10.0F);
  EXPECT_NE(float_checksum(a), float_checksum(one_ulp));
}

TEST(CommTest, CheckSameEverywherePassesForEqualValues) {
  std::vector<float> weights(10007);
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = std::sin(static_cast<float>(i));
  EXPECT_NO_THROW(world().check_same_everywhere("initial weights", weights));
  EXPECT_NO_THROW(world().check_same_everywhere("empty", {}));
}

TEST(CommTest, CheckSameEverywhereNamesTheFirstRankThatDiffers) {
  Comm& comm = world();
  if (comm.size() == 1) GTEST_SKIP() << "needs two ranks to differ";
  const int odd_one = comm.size() - 1;
  for (const bool count_differs : {false, true}) {
    std::vector<float> weights(100, 0.5F);
    if (comm.rank() == odd_one) {
      if (count_differs) {
        weights.push_back(0.5F);
      } else {
        weights[37] = std::nextafter(0.5F, 1.0F);
      }
    }
    std::optional<AgreedFailure> caught;
    try {
      comm.check_same_everywhere("initial weights", weights);
    } catch (const AgreedFailure& e) {
      caught = e;
    }
    EXPECT_TRUE(caught.has_value()) << "rank " << comm.rank() << " did not throw";
    const std::string message = caught ? caught->what() : "";
    const std::string prefix = "error on rank " + std::to_string(odd_one) + " (";
    EXPECT_EQ(message.rfind(prefix, 0), 0U) << message;
    EXPECT_NE(message.find("initial weights differ across ranks: rank " + std::to_string(odd_one) + " has checksum 0x"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find(count_differs ? "(count 101) but rank 0 has 0x" : "(count 100) but rank 0 has 0x"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("(count 100)"), std::string::npos) << message;
    EXPECT_NE(message.find("\nhint: "), std::string::npos) << message;
    if (caught) {
      EXPECT_EQ(caught->failed_rank(), odd_one);
      EXPECT_EQ(caught->failed_count(), 1);
    }
    EXPECT_TRUE(same_on_every_rank(message));
  }
}

TEST(CommTest, AgreeWithoutErrorsReturns) {
  EXPECT_NO_THROW(world().agree(nullptr));
  EXPECT_NO_THROW(world().agree(nullptr));
}

TEST(CommTest, AgreeOnOneFailureGivesEveryRankTheSameMessage) {
  Comm& comm = world();
  const int failing = std::min(1, comm.size() - 1);
  const std::optional<AgreedFailure> caught =
      agree_with(comm.rank() == failing, "cannot open data/x.npy", "check the path in the job file");
  EXPECT_TRUE(caught.has_value()) << "rank " << comm.rank() << " did not throw";
  const std::string message = caught ? caught->what() : "";
  const std::string expected_start = "error on rank " + std::to_string(failing) + " (";
  EXPECT_EQ(message.rfind(expected_start, 0), 0U) << message;
  EXPECT_NE(message.find("test_comm.cpp:"), std::string::npos) << message;
  EXPECT_NE(message.find("): cannot open data/x.npy\nhint: check the path in the job file"), std::string::npos)
      << message;
  EXPECT_EQ(message.find("ranks failed"), std::string::npos) << message;
  if (caught) {
    EXPECT_EQ(caught->failed_rank(), failing);
    EXPECT_EQ(caught->failed_count(), 1);
  }
  EXPECT_TRUE(same_on_every_rank(message));
  // The communicator is still usable afterwards.
  EXPECT_EQ(comm.allreduce_sum(int64_t{1}), comm.size());
}

TEST(CommTest, AgreeOnFailuresEverywhereNamesTheLowestRankOnce) {
  Comm& comm = world();
  const std::optional<AgreedFailure> caught =
      agree_with(true, "cannot open data/x.npy on rank " + std::to_string(comm.rank()), "");
  EXPECT_TRUE(caught.has_value());
  const std::string message = caught ? caught->what() : "";
  EXPECT_EQ(message.rfind("error on rank 0 (", 0), 0U) << message;
  EXPECT_NE(message.find("cannot open data/x.npy on rank 0"), std::string::npos) << message;
  EXPECT_EQ(message.find("error on rank", 1), std::string::npos) << "printed once: " << message;
  EXPECT_EQ(message.find("hint:"), std::string::npos) << message;
  if (comm.size() > 1) {
    EXPECT_NE(message.find(std::to_string(comm.size()) + " of " + std::to_string(comm.size()) + " ranks failed"),
              std::string::npos)
        << message;
  }
  if (caught) {
    EXPECT_EQ(caught->failed_rank(), 0);
    EXPECT_EQ(caught->failed_count(), comm.size());
  }
  EXPECT_TRUE(same_on_every_rank(message));
}

TEST(CommTest, AgreeCarriesExceptionsThatAreNotErrors) {
  Comm& comm = world();
  const int failing = comm.size() - 1;
  std::exception_ptr error;
  if (comm.rank() == failing) error = std::make_exception_ptr(42);
  std::string message;
  try {
    comm.agree(error);
  } catch (const AgreedFailure& e) {
    message = e.what();
  }
  EXPECT_EQ(message,
            "error on rank " + std::to_string(failing) + ": unknown exception (not derived from std::exception)");

  if (comm.rank() == failing) error = std::make_exception_ptr(std::out_of_range("index 7 >= 3"));
  message.clear();
  try {
    comm.agree(error);
  } catch (const AgreedFailure& e) {
    message = e.what();
  }
  EXPECT_EQ(message, "error on rank " + std::to_string(failing) + ": index 7 >= 3");
}

TEST(CommTest, FormatErrorNamesRankWhereAndHint) {
  EXPECT_EQ(format_error(Error("dist/dataset.cpp:88", "cannot open x.npy", "check the path"), 3),
            "error on rank 3 (dist/dataset.cpp:88): cannot open x.npy\nhint: check the path");
  EXPECT_EQ(format_error(Error("dist/dataset.cpp:88", "cannot open x.npy"), 0),
            "error on rank 0 (dist/dataset.cpp:88): cannot open x.npy");
  EXPECT_EQ(format_error(std::runtime_error("bad"), 2), "error on rank 2: bad");
  EXPECT_EQ(format_error(std::runtime_error("bad"), -1), "error: bad");
  // Already agreed: unchanged, whatever rank formats it.
  const AgreedFailure agreed(1, 1, "error on rank 1 (a.cpp:1): x");
  EXPECT_EQ(format_error(agreed, 3), "error on rank 1 (a.cpp:1): x");
}

}  // namespace
}  // namespace shardfit
