#include "dist/train/fit_console.h"

#include <omp.h>

#include <algorithm>
#include <cstdio>

#include "dist/stop_signal.h"
#include "dist/train/fit.h"
#include "kernels/error.h"

namespace shardfit {

FitConsole::FitConsole(const Comm& comm, const FitConfig& config)
    : is_root_(comm.is_root()),
      ranks_(comm.size()),
      global_batch_(config.batch_size),
      verbose_(config.verbose),
      progress_(stdout, comm.is_root() ? config.verbose : 0, config.terminal, config.epochs) {}

void FitConsole::banner(int ranks, SplitCounts samples, int64_t global_batch, int64_t steps, int64_t parameters) {
  if (!speaks()) return;
  std::printf("%s\n", cat("shardfit: ", ranks, " rank(s) x ", omp_get_max_threads(), " thread(s), ", samples.train,
                          " training / ", samples.validation, " validation samples, global batch ", global_batch, ", ",
                          steps, " steps per epoch, ", parameters, " parameters")
                          .c_str());
  std::fflush(stdout);
}

void FitConsole::report_rank(Comm& comm, const RankPlacement& placement, int64_t smallest_slice, int64_t largest_slice,
                             int64_t validation_rows) {
  const std::string line = cat("[rank ", comm.rank(), "/", comm.size(), "] host ", placement.host, ", local rank ",
                               comm.local_rank(), " of ", comm.local_size(), ", ", placement.thread_cpus.size(),
                               " OpenMP thread(s) on cpus ", cpu_list_text(placement.cpus()), ", ", smallest_slice, "-",
                               largest_slice, " samples per step, ", validation_rows, " validation rows");
  // Output forwarded from separate processes arrives in no particular order, so the lines travel to rank 0 (one
  // gather, once, at start) and are printed in rank order.
  for (const std::string& text : comm.gather_text_to_root(line)) std::printf("%s\n", text.c_str());
  if (is_root_) std::fflush(stdout);
}

void FitConsole::step(int64_t step_done, int64_t steps, double elapsed_seconds, const EpochSums& sums,
                      const std::vector<std::string>& metric_names) {
  if (!speaks()) return;
  sums.means(metric_names, running_);
  progress_.step(step_done, steps, elapsed_seconds, running_);
}

void FitConsole::epoch_end(int64_t steps, double seconds, const std::map<std::string, double>& logs) {
  progress_.epoch_end(steps, seconds, logs);
  print_said();
}

void FitConsole::say(const std::string& line) {
  if (speaks()) said_.push_back(line);
}

void FitConsole::print_said() {
  for (const auto& line : said_) progress_.print_line(line);
  said_.clear();
}

void FitConsole::no_checkpoint(const std::filesystem::path& dir, int64_t epoch) {
  say(cat("no checkpoint in ", dir.string(), ": starting from epoch ", epoch + 1));
  print_said();
}

void FitConsole::resuming(const std::filesystem::path& checkpoint, int64_t epoch, int64_t step, int saved_ranks) {
  if (!speaks()) return;
  std::printf("resuming from %s: epoch %lld, step %lld\n", checkpoint.string().c_str(),
              static_cast<long long>(epoch) + 1, static_cast<long long>(step));
  if (saved_ranks != ranks_) {
    // A resume is bit for bit on the same rank count only (dist/train/checkpointer.h, design notes): whoever compares
    // this run with another should know it is not.
    std::printf(
        "resuming a %d-rank checkpoint on %d rank%s: the same global batch (%lld), so the same arithmetic up to "
        "summation order (bit for bit only on %d rank%s)\n",
        saved_ranks, ranks_, ranks_ == 1 ? "" : "s", static_cast<long long>(global_batch_), saved_ranks,
        saved_ranks == 1 ? "" : "s");
  }
  std::fflush(stdout);
}

void FitConsole::stopped_by_signal(int64_t epoch, int64_t step, const std::filesystem::path& checkpoint,
                                   int signal_here) {
  if (!is_root_) return;
  // Rank 0 names the signal it received; a signal sent to other ranks only is "a signal".
  std::printf(
      "\nstopped by signal after epoch %lld step %lld: checkpoint written to %s (%s; exit %d, continue with "
      "--resume)\n",
      static_cast<long long>(epoch) + 1, static_cast<long long>(step) + 1, checkpoint.string().c_str(),
      stop_signal_name(signal_here), kExitCheckpointed);
  std::fflush(stdout);
}

void FitConsole::verdict(const std::string& summary) {
  if (!speaks()) return;
  print_said();
  progress_.print_line(summary);
}

void FitConsole::timeline_written(const std::filesystem::path& path, StepRange range, int64_t steps_recorded) {
  if (!speaks()) return;
  print_said();
  if (steps_recorded == 0) {
    progress_.print_line(cat("timeline: no step of --timeline-steps ", range.first, ":", range.last,
                             " ran in this run: ", path.string(), " holds the ranks' tracks only"));
  } else {
    progress_.print_line(cat("timeline: ", steps_recorded, " step(s) of --timeline-steps ", range.first, ":",
                             range.last, " -> ", path.string(), " (open it in ui.perfetto.dev)"));
  }
}

}  // namespace shardfit
