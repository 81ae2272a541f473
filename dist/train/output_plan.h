// Where a fit writes, settled before the first step: one rule for the job's paths (relative to the job file's
// folder), and every output checked at setup, so that a run never replaces its own input, never has two outputs
// overwrite each other, never finds out after hours that a folder cannot be written, and never silently replaces
// another run's checkpoint. No MPI here: rank 0 calls check_outputs inside an agreed setup phase.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "dist/train/fit.h"
#include "proto/shardfit.pb.h"

namespace shardfit {

// Applies the path rule (resolve_path of dist/io/paths.h, against job_dir) to everything fit writes or loads
// besides the data (which Dataset::open resolves the same way): config's history_dir, checkpoint_dir,
// export_weights and initial_weights, and the job's model_checkpoint.filepath and csv_logger.filename. Paths from
// the command line arrive absolute (launch/cli.cpp resolves them against the working directory), so this leaves
// them as they are.
void resolve_job_paths(const std::filesystem::path& job_dir, FitConfig& config, proto::Job& job);

// Applies the same rule to the files a callback writes (model_checkpoint.filepath, csv_logger.filename), against
// base_dir (the working directory when empty: the --callback flag); an empty name stays empty.
void resolve_callback_paths(const std::filesystem::path& base_dir, proto::Callback& callback);

// Every output of the fit described by (config, job) — history files, loss.svg, the checkpoint, the weights file,
// the --timeline file, ModelCheckpoint's files, CSVLogger's file — refused (Error naming the job field and the path)
// when it
// 1. resolves to an input: a data file of data.train / validation / test, outputs.initial_weights, the job file;
// 2. resolves to another output;
// 3. is a folder where a file goes, or its folder lies under a regular file or cannot be written (probed by
//    creating and removing a file in the folder, or in its nearest existing ancestor when it does not exist yet:
//    nothing is created here);
// 4. is the checkpoint of an earlier run, and this fit is fresh (neither config.resume nor config.overwrite) and
//    writes periodic checkpoints.
// Expects resolve_job_paths to have run. Data paths resolve against job_dir.
void check_outputs(const FitConfig& config, const proto::Job& job, const std::filesystem::path& job_dir);

// A file a command reads, named as the user knows it ("the --weights file", "the job's data.test.x.path").
struct InputFile {
  std::string name;
  std::filesystem::path path;  // as the reader opens it (relative paths: against the working directory)
};

// The one file evaluate --output, predict --output or plot -o writes (`flag` as the user typed it), checked by
// rank 0 before anything is computed, by the same rules as check_outputs: refused (Error naming the flag and the
// path) when it resolves to one of `inputs`, is a folder, or its folder does not exist (these commands make no
// folders), is not a folder or cannot be written. Nothing is created.
void check_command_output(const std::string& flag, const std::filesystem::path& output,
                          const std::vector<InputFile>& inputs);

// Every file the job names or its fit writes, which an evaluate / predict output must never replace: the data
// files of data.train / validation / test (resolved against job_dir, as Dataset::open resolves them),
// outputs.initial_weights, and what `fit` of this job writes (history.json, run.json, history.pb, history.csv,
// loss.svg, <checkpoint_dir>/checkpoint.pb, the final weights file, CSVLogger's file, ModelCheckpoint's file when its
// name has no {fields}). Each is named as the user knows it ("the job's data.train.y.path", "the job's history file
// history.json (outputs.history_dir)"). Only the job's paths are read: its fit options are not validated here.
std::vector<InputFile> job_files(const proto::Job& job, const std::filesystem::path& job_dir);

}  // namespace shardfit
