// --timeline across ranks: every rank's clock mapped to rank 0's, and every rank's spans (dist/io/trace.h) brought
// to rank 0, which writes the one Chrome-trace file. Not the recording itself (TraceRecorder, MPI-free) and not
// what is recorded (the step, the reducer and the fit loop's collaborators hold the recorder).
//
// Design notes:
//  1. Hosts need not share a steady_clock epoch, so each rank r > 0 measures its offset to rank 0 by ping-pong: it
//     reads its clock (t_send), rank 0 answers with its own (t_root), r reads again (t_recv). If the two legs take
//     equally long, rank 0's clock read t_root when r's read (t_send + t_recv) / 2, so offset = t_root - that, within
//     half the round trip either way (the uncertainty). Of several exchanges the one with the least round trip is
//     kept: its bound is the tightest (NTP's and Perfetto's clock-sync rule).
//  2. Measured at the start and again at the end, the offset is interpolated linearly in between: two clocks that
//     drift apart at a constant rate are then aligned over a long run, not only at its start.
//  3. Ranks on one host read the same CLOCK_MONOTONIC: their offset comes out within its uncertainty of 0, which the
//     test checks.
//  4. At the end each rank maps its spans to rank 0's clock itself (microseconds since the origin, rank 0's clock at
//     the first exchange), so only doubles travel: one gather of sizes and values to rank 0 (Comm::gather_to_root).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>

#include "dist/comm.h"
#include "dist/io/trace.h"

namespace shardfit {

// --timeline FILE and --timeline-steps FIRST:LAST, for fit and bench.
struct TimelineSettings {
  std::filesystem::path path;  // empty: no timeline (nothing recorded)
  StepRange steps;             // default 1:200
  int64_t max_events = kDefaultMaxTraceEvents;
  std::string command;  // the command line, recorded in the file
};

// A rank's clock against rank 0's: rank 0's clock = this rank's + offset_ns, within uncertainty_ns, as measured
// around this rank's time at_ns.
struct ClockOffset {
  int64_t offset_ns = 0;
  int64_t uncertainty_ns = 0;
  int64_t at_ns = 0;
};

// One exchange (design note 1): this rank sent at sent_ns and received at received_ns (its clock), rank 0 read
// root_ns in between (its clock).
ClockOffset offset_from_exchange(int64_t sent_ns, int64_t root_ns, int64_t received_ns);
// Of several exchanges, the one with the least round trip (the least uncertainty); the first of equals.
ClockOffset best_offset(std::span<const ClockOffset> exchanges);

// Rank 0's clock at this rank's local_ns, from the offsets measured at the start and at the end of the run (design
// note 2): linear in between and beyond; the start's alone when both were measured at the same time.
int64_t to_root_clock(int64_t local_ns, const ClockOffset& start, const ClockOffset& end);

// Collective: each rank r > 0 in turn exchanges `exchanges` ping-pongs with rank 0; rank 0 gets {0, 0, now}.
ClockOffset measure_clock_offset(Comm& comm, int exchanges = 8);

class Timeline {
 public:
  // Collective: the first clock exchange, and the origin of the file's time axis broadcast from rank 0.
  Timeline(Comm& comm, TimelineSettings settings);

  TraceRecorder& recorder() { return recorder_; }
  const TimelineSettings& settings() const { return settings_; }

  // Collective, once at the end of the run: the second clock exchange, every rank's spans to rank 0, which writes
  // settings.path atomically (creating its folder) and returns the steps recorded (each rank records the same
  // ones); 0 on other ranks. gradient_bytes / buckets: the reducer's layout, which the bucket spans cut up.
  int64_t write(int64_t gradient_bytes, int64_t buckets);

 private:
  Comm& comm_;
  TimelineSettings settings_;
  TraceRecorder recorder_;
  ClockOffset start_;
  int64_t origin_ns_ = 0;  // rank 0's clock at the first exchange
};

// A Timeline when settings.path is set, else null (collective either way, as every rank has the same settings).
std::unique_ptr<Timeline> make_timeline(Comm& comm, const TimelineSettings& settings);

}  // namespace shardfit
