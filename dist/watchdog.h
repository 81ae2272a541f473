// The watchdog: a thread per process that notices when this rank has made no progress for a while (a dead link, a
// stopped or vanished peer, a collective some rank never joins), says which rank it is and the phase it is stuck in,
// and ends the job with kExitStuck instead of letting it hang. Not a failure detector for MPI itself: it only watches
// this process's own progress beacon, which the fit loop and the training step move at their phase boundaries.
//
// Design notes:
//  1. The beacon is a handful of relaxed atomic stores per phase on the training thread (no lock, no allocation, no
//     system call): about 1 ns against phases of microseconds at the smallest. Only the training thread writes it,
//     so a plain load + store counts the moves; the monitor only reads. The phase, epoch and step the monitor reads
//     may come from two neighbouring moves; they only feed a message.
//  2. "No progress" is the beacon not moving. A rank cannot tell a slow peer from a dead one, so a rank waiting in a
//     collective for a peer that computes (or writes a checkpoint) for longer than abort_seconds is ended too: the
//     threshold must exceed the longest phase any rank has (README, "When a host goes quiet").
//  3. The monitor sleeps on a condition variable, waking a few times per threshold and at least four times a second
//     (note 7), so it costs nothing measurable and its destructor returns at once.
//  4. A whole job suspended and resumed (SLURM's scontrol suspend, Ctrl-Z / fg, a laptop asleep) stops this thread
//     too. When the monitor finds it has not run for far longer than its own period, the process itself was not
//     running: the silence before is not the peers' fault, and the count starts again.
//  5. Ending the job: the training thread is stuck inside MPI, and MPI_Abort itself may hang when a peer is stopped
//     or a link is down. So a deadline thread that _exits with kExitStuck after kAbortGraceSeconds is armed first,
//     then the message is printed, then MPI_Abort(MPI_COMM_WORLD, kExitStuck) asks the runtime to kill every rank,
//     and the process _exits itself if that returns. Either way mpirun sees a rank end non-zero and tears the job
//     down. MPI_Abort is called from this thread although the training thread owns MPI (MPI_THREAD_SERIALIZED): the
//     process is ending, the training thread never runs again in MPI, and the deadline bounds what can go wrong.
//  6. Every rank that still runs reports for itself (stderr, flushed, one line): the ranks waiting for a stopped
//     peer all name the collective they wait in, and whichever ends first brings the job down; mpirun kills the
//     rest, stopped ones included.
//  7. A stop signal (dist/stop_signal.h) that arrives while the rank has not moved for kStopReportSeconds is
//     reported at once, with where the rank waits. The rank stops only at a step boundary, and a rank stuck in a
//     collective never reaches one: this is what a launcher's SIGTERM finds when it ends a job whose host was cut
//     off (mpirun lost the host's daemon; srun lost a task), and the launcher's SIGKILL that follows leaves no
//     time for the thresholds (mpirun's comes 1 s after its SIGTERM: odls_base_sigkill_timeout), hence the looks
//     a quarter of a second apart. The job is not ended for it: a healthy but long phase still stops as usual.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace shardfit {

// Exit status of a rank the watchdog ended (EX_SOFTWARE in sysexits.h: the run cannot go on; not 1, an error a
// rank raised itself, and not 75, a checkpointed stop that --resume continues).
inline constexpr int kExitStuck = 70;
// How long MPI_Abort may take before the process ends itself (design note 5).
inline constexpr double kAbortGraceSeconds = 5.0;
// Silence after which a stop signal is reported with where the rank waits (design note 7).
inline constexpr double kStopReportSeconds = 1.0;

// Where a rank is. Each phase names what the rank does there in the watchdog's messages (phase_text).
enum class Phase : int32_t {
  kStarting,        // before the first phase below
  kSetupOutputs,    // setup: rank 0 checks every output location
  kSetupData,       // setup: data files opened, compared across ranks, values checked
  kSetupModel,      // setup: model, optimizer, callbacks, initial weights compared across ranks
  kSetupPlan,       // setup: the step plan, the gradient reducer (collective layout check)
  kRestore,         // --resume: the checkpoint read, broadcast and checked
  kEpochBegin,      // callbacks' on_epoch_begin, the learning rate broadcast
  kGather,          // the step: this rank's slice of the batch gathered
  kForward,         // the step: forward pass, loss and metric sums
  kBackward,        // the step: backward pass
  kAllreduce,       // the step: the bucket allreduces of the gradients (bucket 0 with the batch loss, stop signal)
  kAllreduceWait,   // the step: waiting for outstanding buckets, dividing by the global count
  kOptimizer,       // the step: clipping and the optimizer
  kCheckpoint,      // a checkpoint: the epoch's sums gathered, written by rank 0
  kEpochEnd,        // epoch end: data unchanged check, the epoch's sums allreduced
  kValidation,      // epoch end: the sharded validation pass and its reduction
  kEpochDecisions,  // epoch end: callbacks' on_epoch_end and rank 0's decisions broadcast
  kHistoryWrite,    // epoch end: rank 0 writes the history files
  kFinishing,       // after the last epoch: callbacks' on_train_end, verdict, final weights
};

// "the gradient allreduce", "validation", ...: what a message says the rank is in.
const char* phase_text(Phase phase);
// Whether the phase belongs to one step (its messages name the step, not only the epoch).
bool phase_is_in_step(Phase phase);

// Where this rank is and how often it has moved. Written by the training thread only (design note 1).
class ProgressBeacon {
 public:
  struct Reading {
    uint64_t moves = 0;  // phase entries since the process started
    Phase phase = Phase::kStarting;
    int64_t epoch = -1;  // 0-based; -1 before the first epoch
    int64_t step = -1;   // 0-based within the epoch; -1 before its first step
  };

  // A new epoch: its number, no step yet, then the phase.
  void enter_epoch(int64_t epoch, Phase phase) {
    epoch_.store(epoch, std::memory_order_relaxed);
    step_.store(-1, std::memory_order_relaxed);
    enter(phase);
  }
  // A new step of the current epoch, then the phase.
  void enter_step(int64_t step, Phase phase) {
    step_.store(step, std::memory_order_relaxed);
    enter(phase);
  }
  // A new phase: also a move when the phase is the same as before (a repeated phase is progress too).
  void enter(Phase phase) {
    phase_.store(static_cast<int32_t>(phase), std::memory_order_relaxed);
    moves_.store(moves_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

  // The same phase, further on: a long phase made of many pieces (validation batches) moves the beacon at each, so
  // only a rank that stops moving is reported, however long the phase.
  void tick() { moves_.store(moves_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }

  Reading read() const;

 private:
  std::atomic<uint64_t> moves_{0};
  std::atomic<int32_t> phase_{static_cast<int32_t>(Phase::kStarting)};
  std::atomic<int64_t> epoch_{-1};
  std::atomic<int64_t> step_{-1};
};

// The process's beacon, which the fit loop and the training step move.
ProgressBeacon& progress_beacon();

// Seconds without progress before a warning and before the job is ended; 0 turns either off.
struct WatchdogSettings {
  double warn_seconds = 60.0;
  double abort_seconds = 600.0;
  bool enabled() const { return warn_seconds > 0.0 || abort_seconds > 0.0; }
};

// Throws Error naming the field when a value is negative or not finite, or when warn is not below abort.
void check_watchdog_settings(const WatchdogSettings& settings, const char* warn_name, const char* abort_name);

// "rank 1: waiting 30 s in the gradient allreduce of epoch 3, step 812" (epoch and step 1-based, as the console
// prints them).
std::string stuck_text(int rank, const ProgressBeacon::Reading& where, double seconds);

// The decisions of the watchdog, apart from any thread or clock, so that tests can drive them with made-up times.
class WatchdogMonitor {
 public:
  enum class Verdict { kQuiet, kWarn, kAbort, kStopWhileStuck };

  WatchdogMonitor(int rank, WatchdogSettings settings);

  // One look at the beacon at `now` (seconds on any monotonic clock), with the stop signal received so far (0:
  // none). Returns kWarn once per silence when it reaches warn_seconds, kAbort when it reaches abort_seconds, and
  // kStopWhileStuck once per process when a stop signal has arrived and the silence has reached kStopReportSeconds
  // (design note 7); message() then says why.
  Verdict check(const ProgressBeacon::Reading& reading, double now, int stop_signal = 0);
  const std::string& message() const { return message_; }

  // Seconds between looks (design note 3), and the gap after which the process itself was not running (note 4).
  double period_seconds() const;
  double suspended_gap_seconds() const;

 private:
  int rank_;
  WatchdogSettings settings_;
  bool started_ = false;
  uint64_t last_moves_ = 0;
  double last_move_time_ = 0.0;  // when the monitor first saw the beacon at last_moves_
  double last_check_time_ = 0.0;
  bool warned_ = false;
  bool stop_reported_ = false;
  std::string message_;
};

// The monitor thread (when settings enable it) over the process's beacon, for the lifetime of the object.
class Watchdog {
 public:
  // What the thread does with a verdict; the defaults print to stderr (warn also prints a stop signal's report)
  // and end the job (design note 5).
  struct Actions {
    std::function<void(const std::string&)> warn;
    std::function<void(const std::string&)> abort;
    std::function<double()> now;       // seconds, monotonic
    std::function<int()> stop_signal;  // the stop signal received, 0 for none; empty: never any
  };

  Watchdog(int rank, WatchdogSettings settings);
  Watchdog(int rank, WatchdogSettings settings, const ProgressBeacon& beacon, Actions actions);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void watch();

  const ProgressBeacon& beacon_;
  WatchdogMonitor monitor_;
  Actions actions_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

// The default abort action: prints `message` (stderr, flushed), then ends every rank of the job as design note 5
// says. Never returns.
[[noreturn]] void end_job_stuck(const std::string& message);

}  // namespace shardfit
