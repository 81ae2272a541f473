// The per-rank span buffer and the Chrome-trace writer of --timeline (the format: the Trace Event Format document,
// "JSON Object Format", "Complete Events" and "Metadata Events").
#include "dist/io/trace.h"

#include <algorithm>
#include <charconv>

#include "dist/io/json_writer.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

int64_t nanoseconds(TraceRecorder::Clock::time_point at) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
}

// A Chrome-trace metadata event: {"args": {"name"|"sort_index": ...}, "name": what, "ph": "M", "pid", "tid"}.
std::string metadata(const char* what, int pid, int tid, const JsonObject& args) {
  JsonObject event;
  event.string("name", what).string("ph", "M").integer("pid", pid).integer("tid", tid).object("args", args);
  return event.inline_text();
}

}  // namespace

const char* trace_kind_name(TraceKind kind) {
  switch (kind) {
    case TraceKind::kLoad:
      return "load";
    case TraceKind::kForward:
      return "forward";
    case TraceKind::kBackward:
      return "backward";
    case TraceKind::kAllreduce:
      return "allreduce";
    case TraceKind::kAllreduceWait:
      return "allreduce wait";
    case TraceKind::kOptimizer:
      return "optimizer";
    case TraceKind::kStep:
      return "step";
    case TraceKind::kBucket:
      return "allreduce bucket";
    case TraceKind::kValidation:
      return "validation";
    case TraceKind::kCheckpoint:
      return "checkpoint";
    case TraceKind::kHistory:
      return "history";
    case TraceKind::kPlot:
      return "plot";
    case TraceKind::kCount:
      break;
  }
  return "unknown";
}

TraceTrack trace_track(TraceKind kind) {
  return kind == TraceKind::kBucket ? TraceTrack::kAllreduce : TraceTrack::kMain;
}

StepRange parse_step_range(std::string_view text, std::string_view flag) {
  const auto fail = [&](std::string_view why) {
    SF_FAIL(
        cat(flag, " ", text, ": expected FIRST:LAST, global step numbers from 1 with FIRST <= LAST (e.g. 1:200)", why),
        "steps are counted across epochs from 1: with 45 steps an epoch, 46:90 is the second epoch");
  };
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) fail("");
  StepRange range;
  const auto read = [&](std::string_view part, int64_t& into) {
    const auto [end, error] = std::from_chars(part.data(), part.data() + part.size(), into);
    if (part.empty() || error != std::errc() || end != part.data() + part.size()) fail("");
  };
  read(text.substr(0, colon), range.first);
  read(text.substr(colon + 1), range.last);
  if (range.first < 1) fail(": FIRST is below 1");
  if (range.last < range.first) fail(": LAST is below FIRST");
  return range;
}

TraceRecorder::TraceRecorder(StepRange steps, int64_t max_events) : steps_(steps), max_events_(max_events) {
  // Eight main-track spans and a few buckets a step, and the epochs' spans: growing past this is allowed (a model
  // of many buckets), only never past max_events.
  const int64_t expected = std::min<int64_t>(steps_.count(), 1 << 20) * 12 + 64;
  events_.reserve(static_cast<size_t>(std::max<int64_t>(0, std::min(expected, max_events_))));
}

void TraceRecorder::begin_epoch(int64_t epoch, int64_t first_step, int64_t last_step) {
  epoch_ = epoch;
  epoch_in_range_ = steps_.meets(first_step, last_step);
}

void TraceRecorder::begin_step(int64_t global_step) {
  step_ = global_step;
  step_in_range_ = steps_.contains(global_step);
  if (step_in_range_) ++steps_recorded_;
}

void TraceRecorder::step_span(TraceKind kind, Clock::time_point start, Clock::time_point end) {
  if (!step_in_range_) return;
  add({kind, nanoseconds(start), nanoseconds(end) - nanoseconds(start), epoch_number(), step_, -1, -1});
}

void TraceRecorder::bucket_span(int64_t bucket, int64_t bytes, Clock::time_point start, Clock::time_point end) {
  if (!step_in_range_) return;
  add({TraceKind::kBucket, nanoseconds(start), nanoseconds(end) - nanoseconds(start), epoch_number(), step_, bucket,
       bytes});
}

void TraceRecorder::epoch_span(TraceKind kind, Clock::time_point start, Clock::time_point end) {
  if (!epoch_in_range_) return;
  add({kind, nanoseconds(start), nanoseconds(end) - nanoseconds(start), epoch_number(), -1, -1, -1});
}

void TraceRecorder::add(const TraceEvent& event) {
  if (static_cast<int64_t>(events_.size()) >= max_events_) {
    ++dropped_;
    return;
  }
  events_.push_back(event);
}

std::string chrome_trace_json(const TraceRun& run, const std::vector<TraceRank>& ranks) {
  std::string text = "{\"traceEvents\": [\n";
  bool first = true;
  const auto append = [&](const std::string& event) {
    if (!first) text += ",\n";
    text += event;
    first = false;
  };
  for (const TraceRank& rank : ranks) {
    append(metadata("process_name", rank.rank, 0,
                    JsonObject().string("name", cat("rank ", rank.rank, " (", rank.host, ")"))));
    append(metadata("process_sort_index", rank.rank, 0, JsonObject().integer("sort_index", rank.rank)));
    for (const auto& [track, name] : {std::pair{TraceTrack::kMain, "main"}, {TraceTrack::kAllreduce, "allreduce"}}) {
      const int tid = static_cast<int>(track);
      append(metadata("thread_name", rank.rank, tid, JsonObject().string("name", name)));
      append(metadata("thread_sort_index", rank.rank, tid, JsonObject().integer("sort_index", tid)));
    }
    // Track by track in time order, and of two spans that start together the longer first: readers take spans of
    // equal start in file order, so the step must come before its load to hold it (a recorder appends the step
    // after its phases).
    std::vector<AlignedEvent> events = rank.events;
    std::stable_sort(events.begin(), events.end(), [](const AlignedEvent& a, const AlignedEvent& b) {
      const auto track_a = static_cast<int>(trace_track(a.kind));
      const auto track_b = static_cast<int>(trace_track(b.kind));
      if (track_a != track_b) return track_a < track_b;
      if (a.ts_us != b.ts_us) return a.ts_us < b.ts_us;
      return a.dur_us > b.dur_us;
    });
    for (const AlignedEvent& e : events) {
      JsonObject args;
      if (e.epoch >= 0) args.integer("epoch", e.epoch);
      if (e.step >= 0) args.integer("step", e.step);
      if (e.bucket >= 0) args.integer("bucket", e.bucket);
      if (e.bytes >= 0) args.integer("bytes", e.bytes);
      const std::string name =
          e.kind == TraceKind::kBucket ? cat(trace_kind_name(e.kind), " ", e.bucket) : trace_kind_name(e.kind);
      JsonObject event;
      event.string("name", name)
          .string("cat", e.step >= 0 ? "step" : "epoch")
          .string("ph", "X")
          .number("ts", e.ts_us)
          .number("dur", e.dur_us)
          .integer("pid", rank.rank)
          .integer("tid", static_cast<int>(trace_track(e.kind)))
          .object("args", args);
      append(event.inline_text());
    }
  }
  std::vector<double> offsets;
  std::vector<double> offsets_end;
  std::vector<double> uncertainties;
  std::vector<int64_t> dropped;
  std::vector<int64_t> recorded;
  std::string hosts;
  for (const TraceRank& rank : ranks) {
    offsets.push_back(rank.clock_offset_us);
    offsets_end.push_back(rank.clock_offset_end_us);
    uncertainties.push_back(rank.clock_uncertainty_us);
    dropped.push_back(rank.dropped);
    recorded.push_back(rank.steps_recorded);
    hosts += (hosts.empty() ? "" : ",") + rank.host;
  }
  int64_t dropped_total = 0;
  for (const int64_t d : dropped) dropped_total += d;
  JsonObject other;
  other.string("command", run.command)
      .integer("ranks", static_cast<int64_t>(ranks.size()))
      .string("hosts", hosts)
      .integer("first_step", run.steps.first)
      .integer("last_step", run.steps.last)
      .integers("steps_recorded", recorded)
      .integer("max_events_per_rank", run.max_events)
      .integers("events_dropped", dropped)
      .integer("events_dropped_total", dropped_total)
      .numbers("clock_offset_us", offsets)
      .numbers("clock_offset_end_us", offsets_end)
      .numbers("clock_uncertainty_us", uncertainties)
      .integer("gradient_bytes", run.gradient_bytes)
      .integer("buckets", run.buckets);
  text += "\n],\n\"displayTimeUnit\": \"ms\",\n\"otherData\": ";
  text += other.inline_text();
  text += "}\n";
  return text;
}

}  // namespace shardfit
