// What a fit prints, in one place (Keras's ProgbarLogger and the lines around it): the start banner, "Epoch n/N",
// the progress bar and epoch lines (dist/train/progress.h), callbacks' messages after the epoch line, the resume
// and stop-signal notices, the verdict, and --report-ranks. Rank 0 prints; on other ranks every call is a no-op
// (report_ranks, collective, excepted).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "dist/placement.h"
#include "dist/sharding.h"
#include "dist/train/progress.h"
#include "dist/train/step.h"

namespace shardfit {

struct FitConfig;

class FitConsole {
 public:
  FitConsole(const Comm& comm, const FitConfig& config);

  // "shardfit: 2 rank(s) x 1 thread(s), 1437 training / 360 validation samples, global batch 32, 45 steps per
  // epoch, 9610 parameters" (verbose > 0).
  void banner(int ranks, SplitCounts samples, int64_t global_batch, int64_t steps, int64_t parameters);
  // --report-ranks: collective; every rank's line (host, CPUs, its samples per step), printed by rank 0 in rank
  // order.
  void report_rank(Comm& comm, const RankPlacement& placement, int64_t smallest_slice, int64_t largest_slice,
                   int64_t validation_rows);

  void epoch_begin(int64_t epoch) { progress_.epoch_begin(epoch); }
  // After each step: the bar with rank 0's running means of the epoch (display only, never recorded).
  void step(int64_t step_done, int64_t steps, double elapsed_seconds, const EpochSums& sums,
            const std::vector<std::string>& metric_names);
  // The epoch's line, then the messages callbacks gave during the epoch.
  void epoch_end(int64_t steps, double seconds, const std::map<std::string, double>& logs);

  // A callback's message (verbose > 0), printed after the current epoch's line.
  void say(const std::string& line);
  // Messages said so far, printed now.
  void print_said();
  // --resume found no checkpoint in `dir`: the fit starts at `epoch` (0-based) (verbose > 0).
  void no_checkpoint(const std::filesystem::path& dir, int64_t epoch);
  // "resuming from PATH: epoch E, step S" (verbose > 0); when the checkpoint was written by `saved_ranks` ranks
  // and this run has another count, a second line says so: "resuming a 2-rank checkpoint on 3 ranks: ...".
  void resuming(const std::filesystem::path& checkpoint, int64_t epoch, int64_t step, int saved_ranks);
  // The stop-signal notice, at any verbosity: the run ends with kExitCheckpointed and the user must know why.
  void stopped_by_signal(int64_t epoch, int64_t step, const std::filesystem::path& checkpoint, int signal_here);
  // The end-of-fit verdict, after any message still waiting (verbose > 0).
  void verdict(const std::string& summary);
  // --timeline: where the file went and how many steps it holds, or that no step of the range ran.
  void timeline_written(const std::filesystem::path& path, StepRange range, int64_t steps_recorded);

 private:
  bool speaks() const { return is_root_ && verbose_ > 0; }

  bool is_root_;
  int ranks_;
  int64_t global_batch_;
  int verbose_;
  ProgressPrinter progress_;
  std::vector<std::string> said_;
  std::map<std::string, double> running_;
};

}  // namespace shardfit
