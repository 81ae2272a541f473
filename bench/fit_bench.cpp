// fit_bench: runs shardfit::fit (dist/train/fit.h) on a job under mpirun and prints what the CLI does not: the share
// of step time spent in the gradient allreduce, per rank, and the per-phase breakdown of the step. Not a trainer
// (no history, no checkpoints) and not a test.
//
//   mpirun -np 2 build/bench/fit_bench JOB.pbtxt --epochs 4 --batch-size 512 [--warmup-epochs 1]
//          (any other `shardfit fit` flag works too)
//
// Rank 0 prints one line, `fit_bench key=value ...` (see print_result for the keys), for bench/compare_torch.sh.
//
// How it measures:
//  1. A warm-up fit (--warmup-epochs, default 1) runs first and is thrown away, so oneDNN's primitive cache, the
//     page cache and MPI's shared-memory segments are warm; then the measured fit runs --epochs epochs, and
//     FitTimings covers the measured fit only.
//  2. samples_per_second is the median of the measured fit's epochs after the first, as the history reports them
//     (training samples / training time of the epoch), the same number `shardfit fit` writes to run.json.
//  3. allreduce_fraction = allreduce_seconds / train_seconds on rank 0's clocks. The allreduce time of a rank
//     includes waiting for the slower rank to arrive, so the minimum over ranks is also printed: it is the closer
//     estimate of the communication itself, and max - min is the skew between ranks.
//  4. The breakdown is the measured fit's own: TrainStep's per-phase timers (dist/train/step.h), means per step on
//     rank 0 (*_ms keys; they add up to step_ms). The per-step control values ride with the gradients, so their
//     exchange is inside the allreduce keys. No step is re-implemented here.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "dist/train/fit.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "launch/cli.h"

namespace {

struct BenchOptions {
  int64_t warmup_epochs = 1;
  std::vector<std::string> fit_args;  // "fit", JOB, and the remaining flags for the shardfit CLI parser
};

// Takes out fit_bench's own flags; everything else goes to the shardfit CLI parser unchanged.
BenchOptions parse_bench_args(int argc, char** argv) {
  BenchOptions options;
  options.fit_args.emplace_back("fit");
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto take_int = [&](const std::string& flag, int64_t& into) {
      if (arg == flag) {
        SF_CHECK(i + 1 < argc, shardfit::cat(flag, ": expected a value"));
        into = std::atoll(argv[++i]);
        return true;
      }
      if (arg.rfind(flag + "=", 0) == 0) {
        into = std::atoll(arg.c_str() + flag.size() + 1);
        return true;
      }
      return false;
    };
    if (take_int("--warmup-epochs", options.warmup_epochs)) continue;
    options.fit_args.push_back(arg);
  }
  SF_CHECK(options.warmup_epochs >= 0, "--warmup-epochs takes an integer >= 0");
  return options;
}

// fit_bench writes nothing: no history, and no checkpoints, plot or exported weights where this fit has them
// (checked with `requires`, so fit_bench builds against fit.h before and after those options).
template <typename Config>
void disable_outputs(Config& config) {
  config.write_history = false;
  config.verbose = 0;
  if constexpr (requires { config.plot; }) config.plot = false;
  if constexpr (requires { config.checkpoint_every_epochs; }) config.checkpoint_every_epochs = 0;
  if constexpr (requires { config.checkpoint_every_steps; }) config.checkpoint_every_steps = 0;
  if constexpr (requires { config.resume; }) config.resume = false;
  if constexpr (requires { config.export_weights; }) config.export_weights.clear();
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

void print_result(const shardfit::Comm& comm, const shardfit::FitConfig& config, const shardfit::FitResult& result,
                  const std::vector<double>& allreduce_by_rank) {
  const auto& timings = result.timings;
  std::vector<double> epoch_rates;
  for (int i = 1; i < result.history.epochs_size(); ++i)
    epoch_rates.push_back(result.history.epochs(i).samples_per_second());
  if (epoch_rates.empty()) epoch_rates.push_back(result.history.epochs(0).samples_per_second());
  const double steps = static_cast<double>(std::max<int64_t>(timings.steps, 1));
  const auto [min_it, max_it] = std::minmax_element(allreduce_by_rank.begin(), allreduce_by_rank.end());
  std::printf(
      "fit_bench ranks=%d threads=%d batch=%lld epochs=%lld steps=%lld samples_per_second=%.1f "
      "train_seconds=%.4f allreduce_seconds=%.4f allreduce_fraction=%.4f allreduce_seconds_min_rank=%.4f "
      "allreduce_seconds_max_rank=%.4f allreduce_fraction_min_rank=%.4f step_ms=%.4f allreduce_ms=%.4f",
      comm.size(), omp_get_max_threads(), static_cast<long long>(config.batch_size),
      static_cast<long long>(config.epochs), static_cast<long long>(timings.steps), median(epoch_rates),
      timings.train_seconds, timings.allreduce_seconds, timings.allreduce_seconds / timings.train_seconds, *min_it,
      *max_it, *min_it / timings.train_seconds, 1e3 * timings.train_seconds / steps,
      1e3 * timings.allreduce_seconds / steps);
  const shardfit::StepPhases& p = timings.phases;
  const double ms = 1e3 / static_cast<double>(std::max<int64_t>(p.steps, 1));
  std::printf(
      " gather_ms=%.4f forward_ms=%.4f backward_ms=%.4f allreduce_issued_ms=%.4f allreduce_waited_ms=%.4f "
      "optimizer_ms=%.4f",
      ms * p.gather, ms * p.forward, ms * p.backward, ms * p.allreduce_issued, ms * p.allreduce_waited,
      ms * p.optimizer);
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  return shardfit::run_ranks(argc, argv, [&](shardfit::Comm& comm) {
    BenchOptions options;
    shardfit::Command command;
    shardfit::proto::Job job;
    shardfit::FitConfig config;
    std::exception_ptr error;
    try {
      options = parse_bench_args(argc, argv);
      command = shardfit::parse_command_line(options.fit_args);
      SF_CHECK(command.name == "fit", "usage: fit_bench JOB.pbtxt [shardfit fit flags] [--warmup-epochs N]");
      job = shardfit::read_job_file(command.job_path);
      shardfit::apply_overrides(command.overrides, job);
      config = shardfit::resolve_fit_config(job, false);
      disable_outputs(config);
    } catch (...) {
      error = std::current_exception();
    }
    comm.agree(error);
    const auto job_dir = std::filesystem::absolute(command.job_path).parent_path();

    if (options.warmup_epochs > 0) {
      shardfit::FitConfig warmup = config;
      warmup.epochs = options.warmup_epochs;
      warmup.initial_epoch = 0;
      shardfit::fit(comm, job, job_dir, warmup);
    }
    const shardfit::FitResult result = shardfit::fit(comm, job, job_dir, config);
    const std::vector<double> allreduce_by_rank = comm.allgather(result.timings.allreduce_seconds);

    if (comm.is_root()) print_result(comm, config, result, allreduce_by_rank);
    return 0;
  });
}
