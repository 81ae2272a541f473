// The watchdog's decisions with made-up times (WatchdogMonitor), its messages and settings, and the monitor thread
// with short thresholds and actions that record instead of ending the process. No MPI is started.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/watchdog.h"
#include "kernels/error.h"

namespace shardfit {
namespace {

using Verdict = WatchdogMonitor::Verdict;

ProgressBeacon::Reading in_step(uint64_t moves, Phase phase, int64_t epoch, int64_t step) {
  ProgressBeacon::Reading reading;
  reading.moves = moves;
  reading.phase = phase;
  reading.epoch = epoch;
  reading.step = step;
  return reading;
}

TEST(Watchdog, WarnsOnceThenEndsAfterTheThresholdsOfSilence) {
  WatchdogMonitor monitor(1, {2.0, 4.0});
  const auto stuck = in_step(7, Phase::kAllreduce, 2, 811);
  EXPECT_EQ(monitor.check(stuck, 100.0), Verdict::kQuiet);  // the first look only starts the count
  EXPECT_EQ(monitor.check(stuck, 101.9), Verdict::kQuiet);
  EXPECT_EQ(monitor.check(stuck, 102.0), Verdict::kWarn);
  EXPECT_EQ(monitor.message(),
            "rank 1: waiting 2.0 s in the gradient allreduce of epoch 3, step 812 (watchdog: the job ends after 4.0 s "
            "without progress)");
  EXPECT_EQ(monitor.check(stuck, 102.5), Verdict::kQuiet) << "one warning per silence";
  EXPECT_EQ(monitor.check(stuck, 103.9), Verdict::kQuiet);
  EXPECT_EQ(monitor.check(stuck, 104.1), Verdict::kAbort);
  EXPECT_EQ(monitor.message().rfind("rank 1: waiting 4.1 s in the gradient allreduce of epoch 3, step 812: no "
                                    "progress, the watchdog ends the job (exit 70)\nhint: ",
                                    0),
            0U)
      << monitor.message();
}

TEST(Watchdog, AnyMoveRestartsTheCountAndRearmsTheWarning) {
  WatchdogMonitor monitor(0, {2.0, 4.0});
  EXPECT_EQ(monitor.check(in_step(1, Phase::kForward, 0, 0), 0.0), Verdict::kQuiet);
  EXPECT_EQ(monitor.check(in_step(1, Phase::kForward, 0, 0), 1.0), Verdict::kQuiet);
  EXPECT_EQ(monitor.check(in_step(1, Phase::kForward, 0, 0), 2.5), Verdict::kWarn);
  // The same phase entered again is a move: the count restarts. (Looks every second: a longer gap between looks
  // would mean the monitor itself was suspended, see the next tests.)
  EXPECT_EQ(monitor.check(in_step(2, Phase::kForward, 0, 0), 3.0), Verdict::kQuiet);
  EXPECT_EQ(monitor.check(in_step(2, Phase::kForward, 0, 0), 4.0), Verdict::kQuiet);
  EXPECT_EQ(monitor.check(in_step(2, Phase::kForward, 0, 0), 4.9), Verdict::kQuiet);
  EXPECT_EQ(monitor.check(in_step(2, Phase::kForward, 0, 0), 5.0), Verdict::kWarn);
  EXPECT_EQ(monitor.check(in_step(2, Phase::kForward, 0, 0), 6.0), Verdict::kQuiet);
  EXPECT_EQ(monitor.check(in_step(2, Phase::kForward, 0, 0), 7.1), Verdict::kAbort);
}

TEST(Watchdog, ZeroTurnsEitherThresholdOff) {
  WatchdogMonitor warn_only(0, {1.0, 0.0});
  const auto stuck = in_step(3, Phase::kAllreduceWait, 0, 4);
  EXPECT_EQ(warn_only.check(stuck, 0.0), Verdict::kQuiet);
  EXPECT_EQ(warn_only.check(stuck, 1.0), Verdict::kWarn);
  EXPECT_NE(warn_only.message().find("(watchdog: no progress)"), std::string::npos) << warn_only.message();
  for (double t = 1.5; t < 3.0; t += 0.5) EXPECT_EQ(warn_only.check(stuck, t), Verdict::kQuiet) << t;

  WatchdogMonitor abort_only(0, {0.0, 1.0});
  EXPECT_EQ(abort_only.check(stuck, 0.0), Verdict::kQuiet);
  EXPECT_EQ(abort_only.check(stuck, 0.5), Verdict::kQuiet);
  EXPECT_EQ(abort_only.check(stuck, 1.0), Verdict::kAbort);
  EXPECT_FALSE((WatchdogSettings{0.0, 0.0}.enabled()));
}

// A job suspended as a whole (scontrol suspend, Ctrl-Z) stops the monitor too: the silence it finds on waking is
// not the peers' fault.
TEST(Watchdog, ASuspendedProcessStartsCountingAgainWhenItWakes) {
  WatchdogMonitor monitor(0, {2.0, 4.0});
  const auto stuck = in_step(5, Phase::kAllreduce, 0, 9);
  EXPECT_EQ(monitor.check(stuck, 0.0), Verdict::kQuiet);
  EXPECT_GT(monitor.suspended_gap_seconds(), monitor.period_seconds());
  EXPECT_EQ(monitor.check(stuck, 600.0), Verdict::kQuiet);  // far past abort, but the monitor did not run either
  EXPECT_EQ(monitor.check(stuck, 600.25), Verdict::kQuiet);
  // Looks at the monitor's own period from then on: a real silence.
  double t = 600.25;
  Verdict verdict = Verdict::kQuiet;
  int warnings = 0;
  while (verdict != Verdict::kAbort && t < 700.0) {
    t += monitor.period_seconds();
    verdict = monitor.check(stuck, t);
    warnings += verdict == Verdict::kWarn ? 1 : 0;
  }
  EXPECT_EQ(verdict, Verdict::kAbort);
  EXPECT_EQ(warnings, 1);
  EXPECT_NEAR(t, 604.0, 2 * monitor.period_seconds());
}

// A launcher's SIGTERM reaching a rank stuck in a collective (its host's peer cut off): said at once with where
// the rank waits, once, and the thresholds still count on; a signal during progress says nothing.
TEST(Watchdog, AStopSignalWhileStuckIsReportedOnceWithWhereTheRankWaits) {
  WatchdogMonitor monitor(2, {60.0, 600.0});
  const auto stuck = in_step(9, Phase::kAllreduce, 8, 2);
  EXPECT_EQ(monitor.check(stuck, 0.0, SIGTERM), Verdict::kQuiet);
  EXPECT_EQ(monitor.check(stuck, kStopReportSeconds - 0.1, SIGTERM), Verdict::kQuiet) << "not silent long enough";
  EXPECT_EQ(monitor.check(stuck, 3.2, SIGTERM), Verdict::kStopWhileStuck);
  EXPECT_EQ(monitor.message(),
            "rank 2: waiting 3.2 s in the gradient allreduce of epoch 9, step 3: SIGTERM received; the run stops at "
            "the next step boundary, which every rank must reach");
  EXPECT_EQ(monitor.check(stuck, 4.0, SIGTERM), Verdict::kQuiet) << "once";
  int warnings = 0;
  for (double t = 5.0; t <= 66.0; t += 1.0) {  // the next step, stuck again: the warning comes as usual
    warnings += monitor.check(in_step(10, Phase::kAllreduce, 8, 3), t, SIGTERM) == Verdict::kWarn ? 1 : 0;
  }
  EXPECT_EQ(warnings, 1);

  WatchdogMonitor moving(0, {60.0, 600.0});
  for (uint64_t moves = 1; moves < 20; ++moves) {
    EXPECT_EQ(moving.check(in_step(moves, Phase::kForward, 0, 0), 0.5 * static_cast<double>(moves), SIGINT),
              Verdict::kQuiet);
  }
  WatchdogMonitor no_signal(0, {60.0, 600.0});
  for (double t = 0.0; t < 30.0; t += 0.5) EXPECT_EQ(no_signal.check(stuck, t), Verdict::kQuiet) << t;
}

TEST(Watchdog, LooksOftenEnoughForItsThresholdsAndAtLeastFourTimesASecond) {
  EXPECT_DOUBLE_EQ(WatchdogMonitor(0, {60.0, 600.0}).period_seconds(), 0.25);
  EXPECT_DOUBLE_EQ(WatchdogMonitor(0, {2.0, 4.0}).period_seconds(), 0.25);
  EXPECT_DOUBLE_EQ(WatchdogMonitor(0, {0.8, 1.6}).period_seconds(), 0.1);
  EXPECT_DOUBLE_EQ(WatchdogMonitor(0, {0.0, 0.8}).period_seconds(), 0.1);
}

TEST(Watchdog, MessagesNameTheRankThePhaseAndWhereInTheFit) {
  EXPECT_EQ(stuck_text(3, in_step(1, Phase::kAllreduceWait, 0, 0), 30.0),
            "rank 3: waiting 30 s in the wait for the gradient allreduce of epoch 1, step 1");
  EXPECT_EQ(stuck_text(0, in_step(1, Phase::kValidation, 4, 17), 61.2),
            "rank 0: waiting 61 s in the validation of epoch 5")
      << "an epoch's phase names no step";
  EXPECT_EQ(stuck_text(2, in_step(1, Phase::kSetupData, -1, -1), 5.0),
            "rank 2: waiting 5.0 s in setup (opening and checking the data files)");
  EXPECT_EQ(stuck_text(1, in_step(1, Phase::kFinishing, 9, 3), 5.0),
            "rank 1: waiting 5.0 s in the end of training (callbacks, verdict, final weights)");
  for (int p = static_cast<int>(Phase::kStarting); p <= static_cast<int>(Phase::kFinishing); ++p) {
    EXPECT_NE(std::string(phase_text(static_cast<Phase>(p))), "an unknown phase") << p;
  }
}

TEST(Watchdog, SettingsAreCheckedNamingTheField) {
  EXPECT_NO_THROW(check_watchdog_settings({60.0, 600.0}, "w", "a"));
  EXPECT_NO_THROW(check_watchdog_settings({0.0, 0.0}, "w", "a"));
  EXPECT_NO_THROW(check_watchdog_settings({700.0, 0.0}, "w", "a"));
  const auto message_of = [](WatchdogSettings settings) {
    try {
      check_watchdog_settings(settings, "fit.watchdog_warn_seconds", "fit.watchdog_abort_seconds");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message_of({-1.0, 600.0}), "fit.watchdog_warn_seconds = -1: expected seconds >= 0 (0: no warning)");
  EXPECT_EQ(message_of({60.0, -2.0}), "fit.watchdog_abort_seconds = -2: expected seconds >= 0 (0: never end the job)");
  EXPECT_EQ(message_of({600.0, 60.0}),
            "fit.watchdog_warn_seconds = 600 is not below fit.watchdog_abort_seconds = 60: the warning would never "
            "come before the end");
}

TEST(Watchdog, TheBeaconCountsEveryEntryAndKeepsEpochAndStep) {
  ProgressBeacon beacon;
  EXPECT_EQ(beacon.read().moves, 0U);
  EXPECT_EQ(beacon.read().phase, Phase::kStarting);
  beacon.enter(Phase::kSetupData);
  beacon.enter_epoch(2, Phase::kEpochBegin);
  EXPECT_EQ(beacon.read().step, -1);
  beacon.enter_step(5, Phase::kGather);
  beacon.enter(Phase::kGather);
  beacon.tick();
  const auto reading = beacon.read();
  EXPECT_EQ(reading.moves, 5U);
  EXPECT_EQ(reading.phase, Phase::kGather);
  EXPECT_EQ(reading.epoch, 2);
  EXPECT_EQ(reading.step, 5);
}

// The monitor thread over a beacon: with 50 ms / 100 ms thresholds, a beacon that keeps moving is never reported,
// and one that stops is warned about once and then ended, with the phase it stopped in.
class Recorder {
 public:
  Watchdog::Actions actions() {
    return {[this](const std::string& m) { add("warn", m); }, [this](const std::string& m) { add("abort", m); },
            [] { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); },
            [this] { return signal_.load(); }};
  }
  void receive(int signal_number) { signal_.store(signal_number); }
  std::vector<std::string> events() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }

 private:
  void add(const std::string& kind, const std::string& message) {
    const std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(kind + ": " + message);
  }
  std::mutex mutex_;
  std::vector<std::string> events_;
  std::atomic<int> signal_{0};
};

TEST(Watchdog, TheThreadReportsAStoppedBeaconAndNotAMovingOne) {
  ProgressBeacon beacon;
  Recorder recorder;
  {
    const Watchdog watchdog(4, {0.05, 0.1}, beacon, recorder.actions());
    beacon.enter_epoch(0, Phase::kEpochBegin);
    const auto start = std::chrono::steady_clock::now();
    for (int64_t step = 0; std::chrono::steady_clock::now() - start < std::chrono::milliseconds(300); ++step) {
      beacon.enter_step(step, Phase::kForward);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_TRUE(recorder.events().empty()) << recorder.events().front();
    beacon.enter(Phase::kAllreduce);  // and nothing more
    const auto stopped = std::chrono::steady_clock::now();
    while (recorder.events().size() < 2 && std::chrono::steady_clock::now() - stopped < std::chrono::seconds(10)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }  // the destructor stops the thread (it returned already after the abort)
  const auto events = recorder.events();
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[0].rfind("warn: rank 4: waiting 0.", 0), 0U) << events[0];
  EXPECT_NE(events[0].find(" s in the gradient allreduce of epoch 1, step "), std::string::npos) << events[0];
  EXPECT_EQ(events[1].rfind("abort: rank 4: waiting 0.1 s in the gradient allreduce of epoch 1, step ", 0), 0U)
      << events[1];
}

// The thread with the default thresholds: a stop signal reaching a rank silent in the allreduce is said within
// about a second and a look (looks a quarter of a second apart), long before the 60 s warning.
TEST(Watchdog, TheThreadReportsAStopSignalThatFindsTheRankStuck) {
  ProgressBeacon beacon;
  Recorder recorder;
  const auto start = std::chrono::steady_clock::now();
  {
    const Watchdog watchdog(1, {60.0, 600.0}, beacon, recorder.actions());
    beacon.enter_epoch(0, Phase::kEpochBegin);
    beacon.enter_step(4, Phase::kAllreduce);
    recorder.receive(SIGTERM);
    while (recorder.events().empty() && std::chrono::steady_clock::now() - start < std::chrono::seconds(20)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  const auto events = recorder.events();
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].rfind("warn: rank 1: waiting ", 0), 0U) << events[0];
  EXPECT_NE(events[0].find(" s in the gradient allreduce of epoch 1, step 5: SIGTERM received; "), std::string::npos)
      << events[0];
}

TEST(Watchdog, TheDestructorReturnsAtOnceAndADisabledWatchdogStartsNoThread) {
  ProgressBeacon beacon;
  Recorder recorder;
  const auto start = std::chrono::steady_clock::now();
  { const Watchdog watchdog(0, {60.0, 600.0}, beacon, recorder.actions()); }
  { const Watchdog watchdog(0, {0.0, 0.0}, beacon, recorder.actions()); }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_TRUE(recorder.events().empty());
}

// The default abort action, without MPI running: the message on stderr and exit status 70 at once.
TEST(WatchdogDeathTest, EndingAStuckJobExitsWithItsOwnStatus) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(end_job_stuck("rank 0: waiting 4.0 s in the gradient allreduce"), ::testing::ExitedWithCode(kExitStuck),
              "rank 0: waiting 4.0 s in the gradient allreduce");
}

}  // namespace
}  // namespace shardfit
