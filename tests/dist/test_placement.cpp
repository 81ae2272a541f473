// The placement rule (dist/placement.h) on constructed placements, and this process's own placement.
#include <gtest/gtest.h>
#include <omp.h>
#include <sched.h>

#include <string>
#include <vector>

#include "dist/placement.h"

namespace shardfit {
namespace {

RankPlacement rank_on(const std::string& host, std::vector<std::vector<int>> thread_cpus) {
  return RankPlacement{host, std::move(thread_cpus)};
}

TEST(Placement, CpuListsAreWrittenAsRanges) {
  EXPECT_EQ(cpu_list_text({}), "none");
  EXPECT_EQ(cpu_list_text({3}), "3");
  EXPECT_EQ(cpu_list_text({0, 1, 2, 3}), "0-3");
  EXPECT_EQ(cpu_list_text({0, 2, 3, 4, 8, 10, 11}), "0,2-4,8,10-11");
}

TEST(Placement, EncodingRoundTrips) {
  const RankPlacement placement = rank_on("node-07.cluster", {{0, 1, 2, 3}, {5}, {}, {8, 10, 11}});
  const RankPlacement back = RankPlacement::decode(placement.encode());
  EXPECT_EQ(back.host, placement.host);
  EXPECT_EQ(back.thread_cpus, placement.thread_cpus);
  EXPECT_EQ(back.cpus(), (std::vector<int>{0, 1, 2, 3, 5, 8, 10, 11}));
}

TEST(Placement, RanksPinnedToOneCoreAreWarnedAbout) {
  const auto warnings = placement_warnings({rank_on("vm", {{0}}), rank_on("vm", {{0}})});
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("on host vm, ranks 0-1 run 2 OpenMP threads on 1 CPU (0)"), std::string::npos)
      << warnings[0];
}

TEST(Placement, RanksOnCoresOfTheirOwnAreNot) {
  EXPECT_TRUE(placement_warnings({rank_on("vm", {{0}, {1}}), rank_on("vm", {{2}, {3}})}).empty());
  // Unbound ranks that fit the host: every thread may run anywhere, and there are enough CPUs.
  EXPECT_TRUE(placement_warnings({rank_on("vm", {{0, 1, 2, 3}}), rank_on("vm", {{0, 1, 2, 3}})}).empty());
}

TEST(Placement, OversubscribedHostIsWarnedAbout) {
  const std::vector<int> all = {0, 1};
  const auto warnings = placement_warnings({rank_on("vm", {all}), rank_on("vm", {all}), rank_on("vm", {all})});
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("ranks 0-2 run 3 OpenMP threads on 2 CPUs (0-1)"), std::string::npos) << warnings[0];
}

TEST(Placement, ThreadsOfOneRankSharingACoreCount) {
  const auto warnings = placement_warnings({rank_on("vm", {{4}, {4}, {5}})});
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("rank 0 runs 3 OpenMP threads on 2 CPUs (4-5)"), std::string::npos) << warnings[0];
}

TEST(Placement, HostsAreJudgedApartAndNamedInRankOrder) {
  // The same CPU numbers on two hosts are different CPUs; only node-b is short of them.
  const auto warnings = placement_warnings(
      {rank_on("node-b", {{0}}), rank_on("node-a", {{0}}), rank_on("node-b", {{0}}), rank_on("node-a", {{1}})});
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("on host node-b, ranks 0,2 run 2 OpenMP threads on 1 CPU (0)"), std::string::npos)
      << warnings[0];
}

TEST(Placement, ThisProcessHasOneEntryPerOpenMpThreadWithinItsMask) {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  ASSERT_EQ(sched_getaffinity(0, sizeof mask, &mask), 0);
  const RankPlacement placement = this_rank_placement();
  EXPECT_FALSE(placement.host.empty());
  ASSERT_EQ(static_cast<int>(placement.thread_cpus.size()), omp_get_max_threads());
  for (const auto& cpus : placement.thread_cpus) {
    EXPECT_FALSE(cpus.empty());
    for (const int cpu : cpus) EXPECT_TRUE(CPU_ISSET(cpu, &mask)) << cpu;
  }
}

}  // namespace
}  // namespace shardfit
