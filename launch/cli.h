// The command line of the shardfit executable. Parsing only, no arithmetic: flags become fields of the job
// message (which the job file's values yield to) or options of the command. Paths given as flags are relative to
// the working directory; those that become job fields are made absolute here, since a job's own relative paths
// resolve against the job file's folder.
#pragma once

#include <string>
#include <vector>

#include "dist/io/trace.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

struct Command {
  std::string name;                      // "fit", "evaluate", "predict", "plot", "bench", "help", "version"
  std::string job_path;                  // fit / evaluate / predict (bench: optional): the job file; plot: the
                                         // history (folder or file)
  proto::Job overrides;                  // fit, bench: the fields the flags set (merged over the job file)
  bool resume = false;                   // fit --resume
  bool overwrite = false;                // fit --overwrite
  bool report_ranks = false;             // fit --report-ranks
  std::string weights;                   // evaluate / predict --weights
  std::string x;                         // evaluate / predict --x (default: the job's data.test)
  std::string y;                         // evaluate --y
  std::string output;                    // evaluate --output (.json); predict --output (.npy); plot --output (.svg)
  std::string output_flag = "--output";  // as typed (-o or --output), for the messages about the output
  int64_t batch_size = 256;              // evaluate / predict --batch-size (rows per forward pass per rank); bench
                                         // --batch-size (strong: the global batch, weak: each rank's)
  std::vector<std::string> metrics;      // plot --metric (repeatable); default loss
  std::string model;                     // bench --model: a preset ("mlp", "wide") instead of a job file
  std::string mode = "strong";           // bench --mode strong|weak
  int64_t warmup_steps = 5;              // bench --warmup-steps
  int64_t steps = 20;                    // bench --steps (measured)
  std::string json;                      // bench --json FILE: append the run's record
  std::string timeline;                  // fit / bench --timeline FILE.json (absolute); empty: none
  StepRange timeline_steps;              // fit / bench --timeline-steps FIRST:LAST (default 1:200)
  bool timeline_steps_given = false;
};

// Throws Error with a usage message for unknown commands / flags and bad values.
Command parse_command_line(const std::vector<std::string>& args);

// Merges the flags' fields into the job (flags win).
void apply_overrides(const proto::Job& overrides, proto::Job& job);

std::string usage();

}  // namespace shardfit
