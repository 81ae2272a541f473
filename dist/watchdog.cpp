// The watchdog's monitor thread, its decisions and the way it ends a stuck job (dist/watchdog.h has the design).
#include "dist/watchdog.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "dist/comm.h"
#include "dist/stop_signal.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

constinit ProgressBeacon g_beacon;

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// "4.2" below 10 s, "600" above: whole seconds are what matters at the thresholds people set.
std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.*f", seconds < 10.0 ? 1 : 0, seconds);
  return text;
}

// write(2) straight to stderr: no stdio lock the stuck training thread might hold, nothing left in a buffer when
// the process _exits.
void write_line(const std::string& message) {
  const std::string line = message + "\n";
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t wrote = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (wrote <= 0) return;  // nothing more can be said; ending the job matters more
    done += static_cast<size_t>(wrote);
  }
}

}  // namespace

const char* phase_text(Phase phase) {
  switch (phase) {
    case Phase::kStarting:
      return "start-up";
    case Phase::kSetupOutputs:
      return "setup (checking the outputs)";
    case Phase::kSetupData:
      return "setup (opening and checking the data files)";
    case Phase::kSetupModel:
      return "setup (building the model, comparing the initial weights)";
    case Phase::kSetupPlan:
      return "setup (the step plan and the gradient reducer)";
    case Phase::kRestore:
      return "resume (reading and checking the checkpoint)";
    case Phase::kEpochBegin:
      return "the start";
    case Phase::kGather:
      return "loading the batch";
    case Phase::kForward:
      return "the forward pass";
    case Phase::kBackward:
      return "the backward pass";
    case Phase::kAllreduce:
      return "the gradient allreduce";
    case Phase::kAllreduceWait:
      return "the wait for the gradient allreduce";
    case Phase::kOptimizer:
      return "the optimizer update";
    case Phase::kCheckpoint:
      return "the checkpoint";
    case Phase::kEpochEnd:
      return "the reduction of the loss and metrics at the end";
    case Phase::kValidation:
      return "the validation";
    case Phase::kEpochDecisions:
      return "the callbacks' decisions at the end";
    case Phase::kHistoryWrite:
      return "the history write at the end";
    case Phase::kFinishing:
      return "the end of training (callbacks, verdict, final weights)";
  }
  return "an unknown phase";
}

bool phase_is_in_step(Phase phase) { return phase >= Phase::kGather && phase <= Phase::kOptimizer; }

ProgressBeacon::Reading ProgressBeacon::read() const {
  Reading reading;
  reading.moves = moves_.load(std::memory_order_acquire);
  reading.phase = static_cast<Phase>(phase_.load(std::memory_order_relaxed));
  reading.epoch = epoch_.load(std::memory_order_relaxed);
  reading.step = step_.load(std::memory_order_relaxed);
  return reading;
}

ProgressBeacon& progress_beacon() { return g_beacon; }

void check_watchdog_settings(const WatchdogSettings& settings, const char* warn_name, const char* abort_name) {
  SF_CHECK(std::isfinite(settings.warn_seconds) && settings.warn_seconds >= 0.0,
           cat(warn_name, " = ", settings.warn_seconds, ": expected seconds >= 0 (0: no warning)"));
  SF_CHECK(std::isfinite(settings.abort_seconds) && settings.abort_seconds >= 0.0,
           cat(abort_name, " = ", settings.abort_seconds, ": expected seconds >= 0 (0: never end the job)"));
  SF_CHECK(
      settings.warn_seconds == 0.0 || settings.abort_seconds == 0.0 || settings.warn_seconds < settings.abort_seconds,
      cat(warn_name, " = ", settings.warn_seconds, " is not below ", abort_name, " = ", settings.abort_seconds,
          ": the warning would never come before the end"),
      "set the warning below the abort, or 0 to turn either off");
}

std::string stuck_text(int rank, const ProgressBeacon::Reading& where, double seconds) {
  std::string text = cat("rank ", rank, ": waiting ", seconds_text(seconds), " s in ", phase_text(where.phase));
  if (where.epoch >= 0 && where.phase >= Phase::kEpochBegin && where.phase != Phase::kFinishing) {
    text += cat(" of epoch ", where.epoch + 1);
    if (phase_is_in_step(where.phase) && where.step >= 0) text += cat(", step ", where.step + 1);
  }
  return text;
}

WatchdogMonitor::WatchdogMonitor(int rank, WatchdogSettings settings) : rank_(rank), settings_(settings) {}

double WatchdogMonitor::period_seconds() const {
  double shortest = 0.25;  // design note 7
  if (settings_.warn_seconds > 0.0) shortest = std::min(shortest, settings_.warn_seconds / 8.0);
  if (settings_.abort_seconds > 0.0) shortest = std::min(shortest, settings_.abort_seconds / 8.0);
  return std::max(shortest, 0.005);
}

// Several missed looks and at least 3 s: a loaded machine delays a thread by milliseconds, not seconds.
double WatchdogMonitor::suspended_gap_seconds() const { return std::max(10.0 * period_seconds(), 3.0); }

WatchdogMonitor::Verdict WatchdogMonitor::check(const ProgressBeacon::Reading& reading, double now, int stop_signal) {
  const bool suspended = started_ && now - last_check_time_ > suspended_gap_seconds();
  last_check_time_ = now;
  if (!started_ || reading.moves != last_moves_ || suspended) {
    started_ = true;
    last_moves_ = reading.moves;
    last_move_time_ = now;
    warned_ = false;
    return Verdict::kQuiet;
  }
  const double silent = now - last_move_time_;
  if (settings_.abort_seconds > 0.0 && silent >= settings_.abort_seconds) {
    message_ = cat(stuck_text(rank_, reading, silent), ": no progress, the watchdog ends the job (exit ", kExitStuck,
                   ")\nhint: a peer rank may be stopped, dead or cut off from the network; if a phase of this job "
                   "can take longer, raise fit.watchdog_abort_seconds (--watchdog-abort-seconds; 0 turns it off)");
    return Verdict::kAbort;
  }
  if (stop_signal != 0 && !stop_reported_ && silent >= kStopReportSeconds) {
    stop_reported_ = true;
    message_ = cat(stuck_text(rank_, reading, silent), ": ", stop_signal_name(stop_signal),
                   " received; the run stops at the next step boundary, which every rank must reach");
    return Verdict::kStopWhileStuck;
  }
  if (settings_.warn_seconds > 0.0 && !warned_ && silent >= settings_.warn_seconds) {
    warned_ = true;
    message_ = stuck_text(rank_, reading, silent) +
               (settings_.abort_seconds > 0.0 ? cat(" (watchdog: the job ends after ",
                                                    seconds_text(settings_.abort_seconds), " s without progress)")
                                              : std::string(" (watchdog: no progress)"));
    return Verdict::kWarn;
  }
  return Verdict::kQuiet;
}

Watchdog::Watchdog(int rank, WatchdogSettings settings)
    : Watchdog(rank, settings, progress_beacon(),
               Actions{write_line, [](const std::string& message) { end_job_stuck(message); }, steady_seconds,
                       stop_signal_received}) {}

Watchdog::Watchdog(int rank, WatchdogSettings settings, const ProgressBeacon& beacon, Actions actions)
    : beacon_(beacon), monitor_(rank, settings), actions_(std::move(actions)) {
  if (settings.enabled()) thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::watch() {
  const auto period = std::chrono::duration<double>(monitor_.period_seconds());
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    // The look happens outside the lock, so the destructor never waits for an action (a blocked write, say).
    lock.unlock();
    const int stop_signal = actions_.stop_signal ? actions_.stop_signal() : 0;
    const WatchdogMonitor::Verdict verdict = monitor_.check(beacon_.read(), actions_.now(), stop_signal);
    if (verdict == WatchdogMonitor::Verdict::kWarn || verdict == WatchdogMonitor::Verdict::kStopWhileStuck) {
      actions_.warn(monitor_.message());
    }
    if (verdict == WatchdogMonitor::Verdict::kAbort) {
      actions_.abort(monitor_.message());
      return;
    }
    lock.lock();
    if (wake_.wait_for(lock, period, [this] { return stopping_; })) return;
  }
}

void end_job_stuck(const std::string& message) {
  // The deadline first: printing may block (a full pipe to a launcher that lost its link) and so may MPI_Abort.
  try {
    std::thread([] {
      std::this_thread::sleep_for(std::chrono::duration<double>(kAbortGraceSeconds));
      std::_Exit(kExitStuck);
    }).detach();
  } catch (...) {  // no thread to be had: MPI_Abort without a deadline is still better than a hang
  }
  write_line(message);
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);  // both may be called from any thread, at any time
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, kExitStuck);
  std::_Exit(kExitStuck);
}

}  // namespace shardfit
