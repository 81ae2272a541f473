// dist/io/trace: the --timeline-steps parser and its messages, which spans the recorder keeps (the step range, the
// epochs it touches, the cap with its count of dropped spans), and the Chrome-trace text: tracks named per rank, one
// complete event per span with its numbers, the run's otherData. Python's json module, when present, reads it back.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "dist/io/trace.h"
#include "kernels/error.h"
#include "tests/support/temp_dir.h"

namespace shardfit {
namespace {

using Clock = TraceRecorder::Clock;

Clock::time_point at_us(int64_t us) { return Clock::time_point(std::chrono::microseconds(us)); }

int count_of(const std::string& text, const std::string& what) {
  int count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++count;
  return count;
}

TEST(StepRange, ParsesFirstColonLast) {
  const StepRange range = parse_step_range("3:7", "--timeline-steps");
  EXPECT_EQ(range.first, 3);
  EXPECT_EQ(range.last, 7);
  EXPECT_EQ(range.count(), 5);
  EXPECT_TRUE(range.contains(3) && range.contains(7));
  EXPECT_FALSE(range.contains(2) || range.contains(8));
  EXPECT_TRUE(range.meets(1, 3) && range.meets(7, 9) && range.meets(1, 100));
  EXPECT_FALSE(range.meets(1, 2) || range.meets(8, 9));
  EXPECT_EQ(parse_step_range("5:5", "--timeline-steps").count(), 1);
}

TEST(StepRange, RefusesWhatIsNotARangeNamingTheValue) {
  const std::vector<std::pair<std::string, std::string>> cases = {{"7", ""},
                                                                  {"a:b", ""},
                                                                  {"1:", ""},
                                                                  {":5", ""},
                                                                  {"1:2:3", ""},
                                                                  {"0:5", ": FIRST is below 1"},
                                                                  {"-2:5", ": FIRST is below 1"},
                                                                  {"9:3", ": LAST is below FIRST"},
                                                                  {" 1:2", ""}};
  for (const auto& [text, why] : cases) {
    try {
      parse_step_range(text, "--timeline-steps");
      ADD_FAILURE() << text << " was accepted";
    } catch (const Error& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("--timeline-steps " + text + ": expected FIRST:LAST"), std::string::npos) << message;
      EXPECT_NE(message.find(why), std::string::npos) << message;
    }
  }
}

TEST(TraceRecorder, KeepsTheStepsOfTheRangeAndTheEpochsTheyTouch) {
  TraceRecorder recorder({3, 4});
  // Epoch 0 has steps 1..2, epoch 1 steps 3..4, epoch 2 steps 5..6.
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    recorder.begin_epoch(epoch, epoch * 2 + 1, epoch * 2 + 2);
    for (int64_t step = epoch * 2 + 1; step <= epoch * 2 + 2; ++step) {
      recorder.begin_step(step);
      recorder.step_span(TraceKind::kForward, at_us(step * 100), at_us(step * 100 + 10));
      recorder.bucket_span(0, 64, at_us(step * 100 + 20), at_us(step * 100 + 30));
    }
    recorder.epoch_span(TraceKind::kHistory, at_us(epoch * 1000), at_us(epoch * 1000 + 5));
  }
  ASSERT_EQ(recorder.events().size(), 5U);  // steps 3 and 4: two spans each; epoch 1's history
  EXPECT_EQ(recorder.steps_recorded(), 2);
  EXPECT_EQ(recorder.dropped(), 0);
  const TraceEvent& forward = recorder.events()[0];
  EXPECT_EQ(forward.kind, TraceKind::kForward);
  EXPECT_EQ(forward.step, 3);
  EXPECT_EQ(forward.epoch, 2);  // 1-based, as the console counts epochs
  EXPECT_EQ(forward.start_ns, 300000);
  EXPECT_EQ(forward.duration_ns, 10000);
  const TraceEvent& bucket = recorder.events()[1];
  EXPECT_EQ(bucket.kind, TraceKind::kBucket);
  EXPECT_EQ(bucket.bucket, 0);
  EXPECT_EQ(bucket.bytes, 64);
  const TraceEvent& history = recorder.events()[4];
  EXPECT_EQ(history.kind, TraceKind::kHistory);
  EXPECT_EQ(history.epoch, 2);
  EXPECT_EQ(history.step, -1);
}

TEST(TraceRecorder, StepsOutsideAnyEpochCarryNone) {
  TraceRecorder recorder({1, 2});  // bench: steps only, no begin_epoch
  recorder.begin_step(1);
  recorder.step_span(TraceKind::kLoad, at_us(0), at_us(1));
  recorder.epoch_span(TraceKind::kHistory, at_us(2), at_us(3));  // no epoch in range: dropped silently
  ASSERT_EQ(recorder.events().size(), 1U);
  EXPECT_EQ(recorder.events()[0].epoch, -1);
  EXPECT_EQ(recorder.events()[0].step, 1);
  EXPECT_EQ(recorder.dropped(), 0);
}

TEST(TraceRecorder, StopsAtItsCapAndCountsWhatItDrops) {
  TraceRecorder recorder({1, 100}, 5);
  recorder.begin_epoch(0, 1, 100);
  for (int64_t step = 1; step <= 3; ++step) {
    recorder.begin_step(step);
    recorder.step_span(TraceKind::kLoad, at_us(step), at_us(step + 1));
    recorder.step_span(TraceKind::kForward, at_us(step + 1), at_us(step + 2));
  }
  EXPECT_EQ(recorder.events().size(), 5U);
  EXPECT_EQ(recorder.dropped(), 1);
  EXPECT_EQ(recorder.steps_recorded(), 3);
}

TEST(ChromeTrace, NamesEveryRanksTracksAndWritesOneCompleteEventPerSpan) {
  TraceRun run;
  run.command = "shardfit fit \"job\".pbtxt";
  run.steps = {1, 2};
  run.gradient_bytes = 96;
  run.buckets = 2;
  std::vector<TraceRank> ranks(2);
  for (int r = 0; r < 2; ++r) {
    ranks[r].rank = r;
    ranks[r].host = r == 0 ? "node-a" : "node-b";
    ranks[r].clock_offset_us = r * 12.5;
    ranks[r].clock_uncertainty_us = r * 0.25;
    ranks[r].steps_recorded = 1;
    ranks[r].events.push_back({TraceKind::kStep, 10.0, 5.5, 1, 1, -1, -1});
    ranks[r].events.push_back({TraceKind::kBucket, 11.0, 1.25, 1, 1, 3, 64});
    ranks[r].events.push_back({TraceKind::kValidation, 20.0, 2.0, 1, -1, -1, -1});
  }
  const std::string text = chrome_trace_json(run, ranks);
  EXPECT_EQ(text.rfind("{\"traceEvents\": [", 0), 0U) << text;
  EXPECT_NE(text.find("\"displayTimeUnit\": \"ms\""), std::string::npos);
  EXPECT_NE(
      text.find(R"x({"args": {"name": "rank 1 (node-b)"}, "name": "process_name", "ph": "M", "pid": 1, "tid": 0})x"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find(R"x({"args": {"name": "allreduce"}, "name": "thread_name", "ph": "M", "pid": 0, "tid": 1})x"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"x({"args": {"bucket": 3, "bytes": 64, "epoch": 1, "step": 1}, "cat": "step", "dur": 1.25, )x"
                      R"x("name": "allreduce bucket 3", "ph": "X", "pid": 1, "tid": 1, "ts": 11.0})x"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"x({"args": {"epoch": 1}, "cat": "epoch", "dur": 2.0, "name": "validation", "ph": "X", )x"
                      R"x("pid": 0, "tid": 0, "ts": 20.0})x"),
            std::string::npos)
      << text;
  EXPECT_EQ(count_of(text, "\"ph\": \"X\""), 6);
  EXPECT_EQ(count_of(text, "\"process_sort_index\""), 2);
  EXPECT_NE(text.find("\"clock_offset_us\": [0.0, 12.5]"), std::string::npos) << text;
  EXPECT_NE(text.find("\"hosts\": \"node-a,node-b\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"command\": \"shardfit fit \\\"job\\\".pbtxt\""), std::string::npos) << text;

  // A strict reader takes it as JSON (skipped where /usr/bin/python3 is missing).
  if (std::system("/usr/bin/python3 -c '' 2>/dev/null") != 0) return;
  const testing::TempDir dir("trace");
  const auto path = dir.path() / "trace.json";
  std::ofstream(path) << text;
  const std::string check =
      "/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
      "assert len(d[\"traceEvents\"]) == 18 and d[\"otherData\"][\"ranks\"] == 2' " +
      path.string();
  EXPECT_EQ(std::system(check.c_str()), 0) << text;
}

TEST(ChromeTrace, WritesEachTrackInTimeOrderWithTheEnclosingSpanFirst) {
  TraceRank rank;
  rank.host = "h";
  // As a recorder appends them: the phases, then the step that holds them (same start as the load), a bucket.
  rank.events = {{TraceKind::kLoad, 10.0, 1.0, 1, 1, -1, -1},
                 {TraceKind::kForward, 11.0, 2.0, 1, 1, -1, -1},
                 {TraceKind::kBucket, 13.0, 1.0, 1, 1, 0, 4},
                 {TraceKind::kStep, 10.0, 5.0, 1, 1, -1, -1},
                 {TraceKind::kHistory, 2.0, 1.0, 1, -1, -1, -1}};
  const std::string text = chrome_trace_json(TraceRun{}, {rank});
  const size_t history = text.find("\"name\": \"history\"");
  const size_t step = text.find("\"name\": \"step\"");
  const size_t load = text.find("\"name\": \"load\"");
  const size_t forward = text.find("\"name\": \"forward\"");
  const size_t bucket = text.find("\"name\": \"allreduce bucket 0\"");
  ASSERT_NE(bucket, std::string::npos) << text;
  EXPECT_LT(history, step) << text;
  EXPECT_LT(step, load) << text;
  EXPECT_LT(load, forward) << text;
  EXPECT_LT(forward, bucket) << text;  // the allreduce track after the main one
}

}  // namespace
}  // namespace shardfit
