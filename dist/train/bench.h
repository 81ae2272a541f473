// `shardfit bench`: the scaling benchmark. Every rank generates the same synthetic data in memory (no file is read),
// builds the model of a job file or of a named preset, and runs the training step fit runs (TrainStep,
// dist/train/step.h; no copy of it): warm-up steps, then measured steps timed on every rank. Rank 0 prints a table
// and writes one JSON record per run. Not the fit loop: no validation, callbacks, history or checkpoints.
//
// How it measures (docs in README.md, "Scaling benchmark"):
//  1. Strong scaling keeps the global batch fixed (each rank gets batch / P samples); weak scaling keeps each rank's
//     batch fixed (the global batch grows with P). The data is one global batch of rows, so each measured step is an
//     epoch of one step: begin_epoch draws a fresh permutation (outside the timed step) and the ranks gather
//     scattered rows, as in fit. Every rank holds that batch's rows (in weak scaling, P x --batch-size of them).
//  2. A barrier before the measured steps, then each step timed on its rank around TrainStep::run; the phases come
//     from the step's own timers. Step times are gathered from every rank: the percentiles pool all ranks' steps.
//  3. The allreduce time is the least over the ranks of (issued + waited) per step: a rank that arrives early waits
//     for the last one inside the allreduce, so the least time is the closest to the exchange itself. algbw = bytes
//     / that time, busbw = algbw x 2(P-1)/P, the usual collective benchmarks' definition (the bytes each rank sends
//     and receives in a ring allreduce, per unit of time). A raw Comm::allreduce_sum of the same bytes in one call
//     is timed in the same run, after the steps, the same way. With --overlap on the step's allreduce phases hold
//     only what backward left exposed (the table's "exposed comm"), so the exchange's time is instead the
//     communication thread's inside the calls (GradientReducer::seconds), again the least over the ranks.
//  4. One rank: the reducer makes no MPI call, so the record shows no allreduce bytes and no bandwidth.
//  5. --timeline records the warm-up and measured steps (global steps 1, 2, ... in that order) as fit's, from the
//     same clocks; the clock exchanges and the merge happen outside the timed steps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dist/comm.h"
#include "dist/timeline.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

enum class Scaling { kStrong, kWeak };

struct BenchConfig {
  proto::Job job;          // the model, loss and optimizer (a preset's or a job file's); its data is not read
  std::string model_name;  // "mlp", "wide", "convnet" or the job file's path, for the report
  Scaling scaling = Scaling::kStrong;
  int64_t batch_size = 256;  // strong: the global batch; weak: each rank's batch
  int64_t warmup_steps = 5;
  int64_t steps = 20;
  uint64_t seed = 1337;
  std::filesystem::path
      json_path;              // where the record goes (a JSON Lines file, one record appended per run); empty: none
  std::string command;        // the command line that ran the benchmark, recorded with its numbers
  std::string job_path;       // the job file, when the model is a job's: an input --timeline may not replace
  TimelineSettings timeline;  // --timeline: the warm-up and measured steps, numbered from 1
};

// The named models, each with sparse_categorical_crossentropy and sgd:
//   mlp      784-1024-1024-10, relu, softmax (1.86 M parameters, 7.1 MiB of gradients a step)
//   wide     4096-4096-4096-10, relu, softmax (33.6 M parameters, 128 MiB a step: communication-bound)
//   convnet  input_shape (28, 28, 1): Conv2D(32, 3x3, relu), MaxPooling2D(2), Conv2D(64, 3x3, relu),
//            MaxPooling2D(2), Flatten, Dense(128, relu), Dense(10, softmax) (225 k parameters: compute-bound),
//            the Fashion-MNIST convnet of examples/fashion_mnist and bench/peer_torch.py --model convnet
// Throws Error naming the presets for any other name.
proto::Job bench_preset(std::string_view name);
const std::vector<std::string>& bench_preset_names();

// busbw from algbw at `ranks` ranks: algbw x 2(P-1)/P; 0 at one rank.
double bus_bandwidth(double algbw, int ranks);
// The q-quantile (0..1) of the values by linear interpolation between closest ranks (NumPy's default); 0 when empty.
double quantile(std::vector<double> values, double q);

// What rank 0 reports: the table printed and the record written (one line of JSON). Empty on other ranks.
struct BenchReport {
  std::string table;
  std::string record;
};

// Collective. Setup failures are agreed (every rank throws the same AgreedFailure); rank 0 prints the table and
// appends the record to config.json_path (the file rewritten atomically with the new line after its old ones).
BenchReport run_bench(Comm& comm, const BenchConfig& config);

}  // namespace shardfit
