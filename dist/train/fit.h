// model.fit across ranks: every rank trains on its slice of each global batch, gradients are allreduced every
// step, validation is sharded and reduced to rank 0, which prints the Keras lines and writes the history.
// Not the CLI (launch/) and not the per-rank arithmetic (kernels/).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "dist/comm.h"
#include "dist/gradient_reducer.h"
#include "dist/timeline.h"
#include "dist/train/step_phases.h"
#include "dist/watchdog.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

// The fit options of a job with every default applied (KERAS_CONTRACT.md), validated.
struct FitConfig {
  int64_t epochs = 1;
  int64_t batch_size = 32;
  double validation_split = 0.0;
  std::optional<float> learning_rate;  // unset: the optimizer's own
  bool shuffle = true;
  uint64_t seed = 1337;
  int64_t initial_epoch = 0;
  int64_t validation_freq = 1;
  int verbose = 2;
  bool terminal = false;  // stdout is a terminal a person watches: verbose 1 redraws a progress bar
  std::filesystem::path history_dir = ".";
  bool write_history = true;  // history.json / .pb / .csv (and loss.svg when plot) on rank 0
  bool plot = true;           // loss.svg next to the history
  // Checkpoints (rank 0, atomic): <checkpoint_dir>/checkpoint.pb every N epochs and/or every N steps.
  std::filesystem::path checkpoint_dir;  // default <history_dir>/checkpoints
  int64_t checkpoint_every_epochs = 1;   // 0: none at epoch ends
  int64_t checkpoint_every_steps = 0;    // 0: none inside epochs
  bool resume = false;                   // continue from checkpoint_dir's checkpoint when there is one
  bool overwrite = false;                // a fresh fit may replace an earlier run's checkpoint (--overwrite)
  bool report_ranks = false;             // rank 0 prints one line per rank at start (host, slice, threads)
  // Paths relative to the job file's folder, like every path of a job (fit resolves them; output_plan.h).
  std::filesystem::path initial_weights;  // .npz loaded before training
  std::filesystem::path export_weights;   // .npz written after training; default <history_dir>/weights.npz, none
                                          // when the job sets outputs.export_weights to ""
  std::filesystem::path job_file;         // the job file itself, when known: an input no output may replace
  WatchdogSettings watchdog;              // seconds without progress before a warning / the end of the job
  TimelineSettings timeline;              // --timeline FILE (absolute) and --timeline-steps; no path: none
  bool overlap = false;                   // fit.overlap / --overlap: the allreduce overlaps backward
  int64_t bucket_bytes = GradientReducer::kDefaultBucketBytes;  // fit.bucket_bytes / --bucket-bytes
  GradientReducer::ReduceDtype reduce_dtype = GradientReducer::ReduceDtype::kFloat32;  // fit.reduce_dtype
};

// fit.bucket_bytes, checked (a multiple of 4, at least 4: whole floats), or the default when unset. For fit and
// bench alike. Throws Error naming the field.
int64_t bucket_bytes_of(const proto::FitOptions& fit);

// fit.reduce_dtype (float32 when unset), for fit and bench alike; an unknown name is an Error naming the field.
GradientReducer::ReduceDtype reduce_dtype_of(const proto::FitOptions& fit);

// Applies defaults and checks ranges; errors name the field ("fit.batch_size = 0: expected ...").
// is_terminal decides verbose's default (1 on a terminal, else 2).
FitConfig resolve_fit_config(const proto::Job& job, bool is_terminal);

// What fit measured, beyond the history: for benchmarks. All from the training step's own clocks (step.h), on this
// rank. The per-step control values ride with the gradients (StepControl), so they have no time of their own.
struct FitTimings {
  double train_seconds = 0;      // the steps' phases, all epochs
  double allreduce_seconds = 0;  // of which inside the gradient allreduce calls (GradientReducer::seconds)
  StepPhases phases;             // per phase, summed over the steps run
  int64_t steps = 0;
  int64_t train_samples = 0;  // samples of the epochs completed
};

struct FitResult {
  proto::History history;  // the same on every rank (values are globally reduced)
  FitTimings timings;
  std::vector<float> final_parameters;  // the flat parameter buffer at the end (every rank holds the same)
  int stopped_by_signal = 0;            // SIGTERM / SIGUSR1 ended the run after a checkpoint (exit kExitCheckpointed)
  int64_t resumed_from_step = -1;       // global step the run resumed from, or -1
};

// Collective. job_dir resolves every relative path of the job and of config (data, weights, history, checkpoints,
// callbacks' files; output_plan.h); rank 0 checks every output location before anything is written. Errors in
// setup are agreed (every rank throws the same AgreedFailure); errors inside a step propagate and end the job
// through run_ranks.
FitResult fit(Comm& comm, const proto::Job& job, const std::filesystem::path& job_dir, const FitConfig& config);

}  // namespace shardfit
