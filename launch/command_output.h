// Before evaluate, predict or plot computes anything, rank 0 checks the one file the command writes (the flag's
// --output / -o): it must not replace any file the command reads, and its folder must exist and be writable, so
// that a typo costs an error at once rather than an input destroyed or a result computed in vain.
#pragma once

#include <filesystem>

#include "dist/train/evaluate.h"
#include "launch/cli.h"

namespace shardfit {

// evaluate / predict: the output (when given) against the data files options.data reads (--x / --y, else the job's
// data.test, relative to job_dir), the --weights file, the job file, every other file the job names and every file
// its fit writes (output_plan.h's job_files); then its extension: .npy for predict, .json for evaluate. Throws
// Error naming the flag, the path and what it is.
void check_inference_output(const Command& command, const InferenceOptions& options, const proto::Job& job,
                            const std::filesystem::path& job_dir);

// plot -o: a .svg file that is none of the history files plot may read (the history given, and history.json,
// run.json, history.csv and history.pb of its folder). Throws Error naming the flag and the path.
void check_plot_output(const Command& command);

// plot of bench records: the chart (`chart`, .svg) and the table beside it (`table`, .md) are both refused when
// either is the records file; -o must end in .svg. Throws Error naming the flag and the path.
void check_scaling_plot_output(const Command& command, const std::filesystem::path& chart,
                               const std::filesystem::path& table);

}  // namespace shardfit
