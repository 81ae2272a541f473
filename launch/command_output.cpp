// The output checks of evaluate, predict and plot (see command_output.h). The path comparison itself is
// output_plan's, shared with fit, so every command means the same by "the same file".
#include "launch/command_output.h"

#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "dist/io/history_writer.h"
#include "dist/io/paths.h"
#include "dist/train/output_plan.h"
#include "kernels/error.h"

namespace shardfit {

namespace fs = std::filesystem;

void check_inference_output(const Command& command, const InferenceOptions& options, const proto::Job& job,
                            const fs::path& job_dir) {
  if (command.output.empty()) return;  // evaluate without --output writes nothing
  std::vector<InputFile> inputs;
  // inference_data makes --x / --y absolute and drops data.test's files they replace; what is relative here is
  // the job's data.test, which the readers resolve against the job file's folder.
  const auto add_data = [&](const char* axis, bool from_flag, bool present, const proto::DataFile& file) {
    if (!present || file.path().empty()) return;
    inputs.push_back({from_flag ? cat("the --", axis, " file") : cat("the job's data.test.", axis, ".path"),
                      resolve_path(job_dir, file.path())});
  };
  add_data("x", !command.x.empty(), options.data.has_x(), options.data.x());
  add_data("y", !command.y.empty(), options.data.has_y(), options.data.y());
  inputs.push_back({"the --weights file", options.weights});
  inputs.push_back({"the job file", command.job_path});
  // Every other file the job names, and every file its fit writes: predict into the training labels or evaluate
  // over a run's history or checkpoint would destroy them as surely as overwriting the file being read.
  for (InputFile& file : job_files(job, job_dir)) inputs.push_back(std::move(file));
  check_command_output(command.output_flag, command.output, inputs);
  // The writers write one format whatever the name says: .npy bytes in p.csv, or JSON in x.npy, would fool
  // whatever opens the file next.
  const bool is_predict = command.name == "predict";
  const char* expected = is_predict ? ".npy" : ".json";
  SF_CHECK(fs::path(command.output).extension() == expected,
           cat(command.output_flag, " '", command.output, "': expected a file name ending in ", expected),
           is_predict ? "predict writes the outputs as one .npy array (numpy.load reads it): name the file .npy"
                      : "evaluate writes the metrics as JSON: name the file .json");
}

void check_plot_output(const Command& command) {
  if (command.output.empty()) return;  // each metric goes to METRIC.svg beside the history
  const fs::path source = command.job_path;
  std::vector<InputFile> inputs = {{"the history", source}};
  std::error_code error;
  const fs::path folder = fs::is_directory(source, error) ? source : source.parent_path();
  // A history file is read with its companions (history.json takes run.json's verdict), and a folder by whichever
  // file it holds: none of them may be replaced.
  const HistoryFiles files = history_files(folder);
  for (const fs::path& file : {files.json, files.run_json, files.csv, files.pb}) {
    inputs.push_back({cat("the history's ", file.filename().string()), file});
  }
  check_command_output(command.output_flag, command.output, inputs);
  // The plot is SVG whatever the name says: SVG in a .png file would not open as an image.
  SF_CHECK(fs::path(command.output).extension() == ".svg",
           cat(command.output_flag, " '", command.output, "': expected a file name ending in .svg"),
           "plot writes SVG only: name the file .svg (a browser opens it; an SVG converter makes a PNG of it)");
}

void check_scaling_plot_output(const Command& command, const fs::path& chart, const fs::path& table) {
  const std::vector<InputFile> inputs = {{"the bench records", command.job_path}};
  const std::string flag = command.output.empty() ? std::string("plot") : command.output_flag;
  check_command_output(flag, chart, inputs);
  check_command_output(cat(flag, "'s table"), table, inputs);
  SF_CHECK(chart.extension() == ".svg", cat(flag, " '", chart.string(), "': expected a file name ending in .svg"),
           "plot writes SVG only: name the file .svg (a browser opens it; an SVG converter makes a PNG of it)");
}

}  // namespace shardfit
