// The timeline's clock alignment and merge (the reasoning is in dist/timeline.h's design notes).
#include "dist/timeline.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "dist/io/history_writer.h"
#include "dist/placement.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// What each rank sends to rank 0 besides its spans, and each span, as doubles (one gather of each).
enum RankField { kOffsetUs, kOffsetEndUs, kUncertaintyUs, kDropped, kStepsRecorded, kRankFields };
enum EventField { kKind, kTs, kDur, kEpoch, kStep, kBucket, kBytes, kEventFields };

}  // namespace

ClockOffset offset_from_exchange(int64_t sent_ns, int64_t root_ns, int64_t received_ns) {
  const int64_t midpoint = sent_ns + (received_ns - sent_ns) / 2;
  return {root_ns - midpoint, (received_ns - sent_ns + 1) / 2, midpoint};
}

ClockOffset best_offset(std::span<const ClockOffset> exchanges) {
  SF_CHECK(!exchanges.empty(), "no clock exchange to choose from");
  return *std::min_element(exchanges.begin(), exchanges.end(), [](const ClockOffset& a, const ClockOffset& b) {
    return a.uncertainty_ns < b.uncertainty_ns;
  });
}

int64_t to_root_clock(int64_t local_ns, const ClockOffset& start, const ClockOffset& end) {
  if (end.at_ns == start.at_ns) return local_ns + start.offset_ns;
  const double slope =
      static_cast<double>(end.offset_ns - start.offset_ns) / static_cast<double>(end.at_ns - start.at_ns);
  return local_ns + start.offset_ns + static_cast<int64_t>(slope * static_cast<double>(local_ns - start.at_ns));
}

ClockOffset measure_clock_offset(Comm& comm, int exchanges) {
  if (comm.is_root()) {
    // Answers each rank's pings in turn, in rank order; a rank's pings wait until its turn comes.
    for (int r = 1; r < comm.size(); ++r) {
      for (int i = 0; i < exchanges; ++i) {
        int64_t ping = 0;
        comm.receive(std::span<int64_t>(&ping, 1), r);
        const int64_t root = now_ns();
        comm.send(std::span<const int64_t>(&root, 1), r);
      }
    }
    return {0, 0, now_ns()};
  }
  std::vector<ClockOffset> measured;
  for (int i = 0; i < exchanges; ++i) {
    const int64_t sent = now_ns();
    comm.send(std::span<const int64_t>(&sent, 1), 0);
    int64_t root = 0;
    comm.receive(std::span<int64_t>(&root, 1), 0);
    measured.push_back(offset_from_exchange(sent, root, now_ns()));
  }
  return best_offset(measured);
}

Timeline::Timeline(Comm& comm, TimelineSettings settings)
    : comm_(comm), settings_(std::move(settings)), recorder_(settings_.steps, settings_.max_events) {
  start_ = measure_clock_offset(comm_);
  origin_ns_ = comm_.broadcast(comm_.is_root() ? start_.at_ns : int64_t{0}, 0);
}

int64_t Timeline::write(int64_t gradient_bytes, int64_t buckets) {
  const ClockOffset end = measure_clock_offset(comm_);
  const auto to_us = [](int64_t ns) { return static_cast<double>(ns) / 1e3; };

  std::vector<double> mine;
  mine.reserve(recorder_.events().size() * kEventFields);
  for (const TraceEvent& e : recorder_.events()) {
    const int64_t start = to_root_clock(e.start_ns, start_, end);
    const int64_t finish = to_root_clock(e.start_ns + e.duration_ns, start_, end);
    mine.insert(mine.end(), {static_cast<double>(e.kind), to_us(start - origin_ns_), to_us(finish - start),
                             static_cast<double>(e.epoch), static_cast<double>(e.step), static_cast<double>(e.bucket),
                             static_cast<double>(e.bytes)});
  }
  const double about_me[kRankFields] = {
      to_us(start_.offset_ns), to_us(end.offset_ns), to_us(std::max(start_.uncertainty_ns, end.uncertainty_ns)),
      static_cast<double>(recorder_.dropped()), static_cast<double>(recorder_.steps_recorded())};
  const std::vector<double> ranks_info = comm_.gather_to_root(std::span<const double>(about_me));
  const std::vector<double> events = comm_.gather_to_root(std::span<const double>(mine));
  const std::vector<int64_t> event_counts = comm_.allgather(static_cast<int64_t>(mine.size()));
  const std::vector<std::string> hosts = comm_.gather_text_to_root(this_rank_placement().host);

  int64_t steps_recorded = 0;
  run_agreed(comm_, [&] {
    if (!comm_.is_root()) return;
    std::vector<TraceRank> ranks(static_cast<size_t>(comm_.size()));
    size_t at = 0;
    for (int r = 0; r < comm_.size(); ++r) {
      TraceRank& rank = ranks[static_cast<size_t>(r)];
      const double* info = &ranks_info[static_cast<size_t>(r) * kRankFields];
      rank.rank = r;
      rank.host = hosts[static_cast<size_t>(r)];
      rank.clock_offset_us = info[kOffsetUs];
      rank.clock_offset_end_us = info[kOffsetEndUs];
      rank.clock_uncertainty_us = info[kUncertaintyUs];
      rank.dropped = static_cast<int64_t>(info[kDropped]);
      rank.steps_recorded = static_cast<int64_t>(info[kStepsRecorded]);
      const size_t stop = at + static_cast<size_t>(event_counts[static_cast<size_t>(r)]);
      for (; at < stop; at += kEventFields) {
        const double* v = &events[at];
        rank.events.push_back({static_cast<TraceKind>(static_cast<int32_t>(v[kKind])), v[kTs], v[kDur],
                               static_cast<int64_t>(v[kEpoch]), static_cast<int64_t>(v[kStep]),
                               static_cast<int64_t>(v[kBucket]), static_cast<int64_t>(v[kBytes])});
      }
    }
    const TraceRun run{settings_.command, settings_.steps, settings_.max_events, gradient_bytes, buckets};
    if (settings_.path.has_parent_path()) {
      std::error_code error;  // checked to be creatable at setup; a failure shows in the write below
      std::filesystem::create_directories(settings_.path.parent_path(), error);
    }
    write_file_atomically(settings_.path, chrome_trace_json(run, ranks));
    steps_recorded = ranks.front().steps_recorded;
  });
  return steps_recorded;
}

std::unique_ptr<Timeline> make_timeline(Comm& comm, const TimelineSettings& settings) {
  if (settings.path.empty()) return nullptr;
  return std::make_unique<Timeline>(comm, settings);
}

}  // namespace shardfit
