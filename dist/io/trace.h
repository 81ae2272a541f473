// One rank's timeline of a run (--timeline): spans of the training step's phases, of each gradient bucket's
// allreduce and of the epoch's validation and file writes, kept in memory on this rank's steady_clock, and the
// Chrome-trace JSON writer that turns every rank's spans into the one file ui.perfetto.dev and chrome://tracing open.
// No MPI: aligning the ranks' clocks and bringing their spans to rank 0 is dist/timeline.h's.
//
// Design notes:
//  1. Recording costs a null-pointer check when --timeline is not given: whoever records holds a TraceRecorder*
//     that is null then. When it is given, a span is a push_back of a fixed-size TraceEvent into a vector reserved
//     for the step range, taken from clock reads the step's timers make anyway (dist/train/step.h): nothing is timed
//     twice.
//  2. The size is bounded twice: only the global steps of a range are recorded (epoch-level spans for the epochs
//     those steps touch), and at most max_events per rank; beyond that spans are counted as dropped, not kept.
//  3. An event carries its kind (an enum, so it crosses ranks as a number) and its numbers; names are spelt once,
//     here, when the file is written.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shardfit {

// What a span is. The first six are the step's phases (StepPhases, dist/train/step_phases.h) in the order they run.
enum class TraceKind : int32_t {
  kLoad,           // the step's gather: rows of the permutation, samples copied (StepPhases::gather)
  kForward,        // forward, loss and metric sums
  kBackward,       // the layers' backward
  kAllreduce,      // GradientReducer::start: the bucket allreduces issued (without overlap all of the exchange;
                   // bucket 0 carries the fit loop's per-step control values, dist/train/step_control.h)
  kAllreduceWait,  // GradientReducer::finish: outstanding buckets waited for, the scaling by the global count
  kOptimizer,      // clipping and the optimizer's update
  kStep,           // the whole step, from the load's first clock read to the optimizer's last
  kBucket,         // one bucket's allreduce, on the allreduce track
  kValidation,     // the sharded validation pass of an epoch
  kCheckpoint,     // a checkpoint gathered and written (rank 0)
  kHistory,        // the history files rewritten (rank 0)
  kPlot,           // loss.svg redrawn (rank 0)
  kCount
};

// "load", "forward", ..., "allreduce bucket" (the bucket's number follows in the file), "history", "plot".
const char* trace_kind_name(TraceKind kind);

// The tracks of a rank (Chrome trace threads): the main thread's spans, and the bucket allreduces apart from them,
// so that a non-blocking reducer's buckets can run under backward without overlapping its spans.
enum class TraceTrack : int32_t { kMain = 0, kAllreduce = 1 };
TraceTrack trace_track(TraceKind kind);

// Global steps FIRST:LAST (1-based, across epochs, inclusive): the steps a timeline records.
struct StepRange {
  int64_t first = 1;
  int64_t last = 200;
  bool contains(int64_t step) const { return step >= first && step <= last; }
  bool meets(int64_t first_step, int64_t last_step) const { return first_step <= last && last_step >= first; }
  int64_t count() const { return last - first + 1; }
};

// "A:B" with 1 <= A <= B; anything else throws Error naming `flag`, the value and what was expected.
StepRange parse_step_range(std::string_view text, std::string_view flag);

// At most this many spans per rank (about 130 bytes each in the file): ~13 MB a rank at worst.
inline constexpr int64_t kDefaultMaxTraceEvents = 100000;

struct TraceEvent {
  TraceKind kind = TraceKind::kStep;
  int64_t start_ns = 0;  // this rank's steady_clock, since its epoch
  int64_t duration_ns = 0;
  int64_t epoch = -1;   // 1-based, as the console counts them; -1: none
  int64_t step = -1;    // global step, 1-based; -1: none (an epoch-level span)
  int64_t bucket = -1;  // kBucket: the bucket's place in reduction order (dist/gradient_reducer.h)
  int64_t bytes = -1;   // kBucket: the bucket's bytes
};

class TraceRecorder {
 public:
  using Clock = std::chrono::steady_clock;

  // Reserves room for the range's steps (a few spans each), within max_events.
  TraceRecorder(StepRange steps, int64_t max_events = kDefaultMaxTraceEvents);

  // The epoch about to run (0-based) and its global steps [first_step, last_step] (1-based): its epoch-level spans
  // are kept when those steps meet the range. Without it (bench) spans carry no epoch.
  void begin_epoch(int64_t epoch, int64_t first_step, int64_t last_step);
  // The step about to run: its global number (1-based). Its spans are kept when it lies in the range.
  void begin_step(int64_t global_step);

  // A span of the current step (dropped outside the range); kBucket spans through bucket_span.
  void step_span(TraceKind kind, Clock::time_point start, Clock::time_point end);
  void bucket_span(int64_t bucket, int64_t bytes, Clock::time_point start, Clock::time_point end);
  // A span of the current epoch (validation, checkpoint, history, plot); kept when the epoch meets the range.
  void epoch_span(TraceKind kind, Clock::time_point start, Clock::time_point end);

  const std::vector<TraceEvent>& events() const { return events_; }
  int64_t dropped() const { return dropped_; }  // spans past max_events
  int64_t steps_recorded() const { return steps_recorded_; }
  StepRange steps() const { return steps_; }
  int64_t max_events() const { return max_events_; }

 private:
  void add(const TraceEvent& event);
  int64_t epoch_number() const { return epoch_ >= 0 ? epoch_ + 1 : -1; }

  StepRange steps_;
  int64_t max_events_;
  std::vector<TraceEvent> events_;
  int64_t dropped_ = 0;
  int64_t steps_recorded_ = 0;
  int64_t epoch_ = -1;  // 0-based
  int64_t step_ = -1;
  bool step_in_range_ = false;
  bool epoch_in_range_ = false;
};

// A span on the merged timeline: microseconds on rank 0's clock since the timeline's origin.
struct AlignedEvent {
  TraceKind kind = TraceKind::kStep;
  double ts_us = 0;
  double dur_us = 0;
  int64_t epoch = -1;
  int64_t step = -1;
  int64_t bucket = -1;
  int64_t bytes = -1;
};

// One rank of the merged file.
struct TraceRank {
  int rank = 0;
  std::string host;
  double clock_offset_us = 0;       // added to this rank's clock to read rank 0's, at the start of the run
  double clock_offset_end_us = 0;   // the same at the end (the difference is the drift, corrected linearly)
  double clock_uncertainty_us = 0;  // half the least round trip of the exchanges, the worse of the two
  int64_t dropped = 0;
  int64_t steps_recorded = 0;
  std::vector<AlignedEvent> events;
};

// What the file says about the run as a whole (its otherData).
struct TraceRun {
  std::string command;
  StepRange steps;
  int64_t max_events = kDefaultMaxTraceEvents;
  int64_t gradient_bytes = 0;  // the flat gradient buffer, which the buckets cut up
  int64_t buckets = 0;
};

// The Chrome trace (JSON object format): {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}.
// One process per rank (pid = rank, named "rank R (host)", sorted by rank), two threads each (tid 0 "main", tid 1
// "allreduce"), "X" complete events with ts / dur in microseconds and their numbers under "args", each track's in
// time order with the enclosing span first where two start together.
std::string chrome_trace_json(const TraceRun& run, const std::vector<TraceRank>& ranks);

}  // namespace shardfit
