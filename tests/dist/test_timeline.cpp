// dist/timeline's clock arithmetic, with made-up clock reads (no MPI is started): the offset of one ping-pong and
// its bound, the least round trip chosen of several, and the linear correction of a drift between the start's and
// the end's offsets.
#include <gtest/gtest.h>

#include <vector>

#include "dist/timeline.h"

namespace shardfit {
namespace {

// This rank's clock reads rank 0's minus 1'000'000 ns. A ping leaves at 100 (this clock), takes 30 ns to arrive,
// rank 0 reads 1'000'130 (= 130 here), and the answer takes 50 ns: received at 180.
TEST(ClockOffset, OneExchangeGivesTheOffsetWithinHalfTheRoundTrip) {
  const ClockOffset offset = offset_from_exchange(100, 1'000'130, 180);
  EXPECT_EQ(offset.uncertainty_ns, 40);  // rtt 80 / 2
  EXPECT_EQ(offset.at_ns, 140);          // the midpoint, where the estimate holds
  EXPECT_EQ(offset.offset_ns, 1'000'130 - 140);
  // Unequal legs bias the estimate by half their difference (10 ns), always within the bound.
  EXPECT_LE(std::abs(offset.offset_ns - 1'000'000), offset.uncertainty_ns);
  EXPECT_EQ(offset.offset_ns - 1'000'000, -10);
}

TEST(ClockOffset, SameClockGivesZeroWhenTheLegsAreEqual) {
  const ClockOffset offset = offset_from_exchange(5'000, 5'025, 5'050);
  EXPECT_EQ(offset.offset_ns, 0);
  EXPECT_EQ(offset.uncertainty_ns, 25);
}

TEST(ClockOffset, TheLeastRoundTripWins) {
  const std::vector<ClockOffset> exchanges = {offset_from_exchange(0, 500, 1'000),         // rtt 1000
                                              offset_from_exchange(2'000, 2'110, 2'200),   // rtt 200
                                              offset_from_exchange(3'000, 3'300, 3'400),   // rtt 400
                                              offset_from_exchange(4'000, 4'150, 4'200)};  // rtt 200, later
  const ClockOffset best = best_offset(exchanges);
  EXPECT_EQ(best.uncertainty_ns, 100);
  EXPECT_EQ(best.at_ns, 2'100);  // the first of equals
  EXPECT_EQ(best.offset_ns, 10);
}

TEST(ClockOffset, ADriftBetweenStartAndEndIsCorrectedLinearly) {
  // 1000 ns ahead at local 0, 3000 ns ahead at local 1'000'000: 2 ns per microsecond of drift.
  const ClockOffset start{1'000, 5, 0};
  const ClockOffset end{3'000, 5, 1'000'000};
  EXPECT_EQ(to_root_clock(0, start, end), 1'000);
  EXPECT_EQ(to_root_clock(500'000, start, end), 500'000 + 2'000);
  EXPECT_EQ(to_root_clock(1'000'000, start, end), 1'003'000);
  EXPECT_EQ(to_root_clock(2'000'000, start, end), 2'005'000);  // beyond the end, the same line
  // Measured once (one rank, or both at the same instant): the start's offset alone.
  EXPECT_EQ(to_root_clock(777, start, start), 1'777);
}

TEST(ClockOffset, ClocksOnDifferentEpochsAreMappedExactly) {
  // Hosts booted days apart: offsets far beyond a double's exact integers stay exact in int64.
  const int64_t skew = int64_t{9'000'000'000'000'000};
  const ClockOffset offset = offset_from_exchange(1'000, skew + 1'050, 1'100);
  EXPECT_EQ(offset.offset_ns, skew);
  EXPECT_EQ(to_root_clock(123'456'789, offset, offset), skew + 123'456'789);
}

}  // namespace
}  // namespace shardfit
