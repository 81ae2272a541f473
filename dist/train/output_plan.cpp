// The output plan of a fit: the job's paths resolved by one rule, and every output location checked before
// anything is written (see output_plan.h for the rules).
//
// Design notes:
//  1. Paths are compared after weakly_canonical (symlinks and ".." resolved as far as the path exists), and two
//     existing files also by identity (fs::equivalent), so a hard link or a second spelling of the data file is
//     caught as well as the same text.
//  2. The writability probe creates nothing the run would keep: a folder that does not exist yet is judged by its
//     nearest existing ancestor (the one create_directories will write in), with a probe file made and removed
//     there. Checking permission bits would be wrong for root and for ACLs; a real create is the only test that
//     agrees with what the writers will meet.
//  3. ModelCheckpoint's file name may hold {epoch} / {val_loss:.2f} fields. Its folder is checked like any other;
//     its file name is compared with the inputs and outputs in that folder as a pattern (each field matching any
//     text), since any epoch could produce the clash.
#include "dist/train/output_plan.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <regex>
#include <string>
#include <system_error>
#include <vector>

#include "dist/io/checkpoint_file.h"
#include "dist/io/history_writer.h"
#include "dist/io/paths.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

namespace fs = std::filesystem;

// A file the run reads or writes, named as the job names it ("data.train.x.path", "outputs.history_dir's
// history.csv").
struct NamedPath {
  std::string name;
  fs::path path;       // absolute, as resolved
  fs::path canonical;  // weakly_canonical of path, or path itself when that fails
};

NamedPath named(std::string name, const fs::path& path) {
  std::error_code error;
  fs::path canonical = fs::weakly_canonical(path, error);
  if (error) canonical = path.lexically_normal();
  return {std::move(name), path, std::move(canonical)};
}

bool same_file(const NamedPath& a, const NamedPath& b) {
  if (a.canonical == b.canonical) return true;
  std::error_code error;
  return fs::equivalent(a.path, b.path, error) && !error;
}

std::string shown(const NamedPath& p) { return cat("'", p.path.string(), "'"); }

// A ModelCheckpoint file name with {fields}, as a regex over file names: literal text escaped, each field ".*".
std::regex pattern_regex(const std::string& name) {
  std::string text;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '{') {
      const size_t close = name.find('}', i);
      if (close != std::string::npos) {
        text += ".*";
        i = close;
        continue;
      }
    }
    if (std::strchr(R"(\^$.|?*+()[]{})", name[i]) != nullptr) text += '\\';
    text += name[i];
  }
  return std::regex(text);
}

// 0 when a new file can be made in the existing folder `folder` (one is made and removed: design note 2), else
// the errno of the attempt.
int write_probe_error(const fs::path& folder) {
  const fs::path probe = folder / cat(".shardfit-write-probe.", ::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  ::close(fd);
  ::unlink(probe.c_str());
  return 0;
}

// A folder fit writes in: the job field that names it and when the run writes there (for the hint, so a user
// knows how soon an unwritable folder would have failed).
struct OutputFolder {
  std::string field;
  fs::path path;
  std::string when;
};

// True when `inner` is `outer` or lies under it, comparing whole path components ("h7x" is not under "h7").
bool is_within(const fs::path& inner, const fs::path& outer) {
  auto in = inner.begin();
  for (auto out = outer.begin(); out != outer.end(); ++out, ++in) {
    if (out->empty()) continue;  // a trailing separator
    if (in == inner.end() || *in != *out) return false;
  }
  return true;
}

// The folder `dir` can receive new files (see design note 2). what names the job field for the message, when says
// when the run writes there.
void check_writable_folder(const fs::path& dir, const std::string& what, const std::string& when) {
  std::error_code error;
  fs::path at = dir;
  while (!fs::exists(at, error)) {
    if (!at.has_parent_path() || at.parent_path() == at) break;
    at = at.parent_path();
  }
  const bool is_folder = fs::is_directory(at, error);
  if (!is_folder && at == dir) {
    SF_FAIL(cat(what, " '", dir.string(), "' is a file: expected a folder (or a path where one can be made)"),
            "choose a folder name that is not an existing file");
  }
  if (!is_folder) {
    SF_FAIL(cat(what, " '", dir.string(), "' cannot be made: '", at.string(), "' is a file, not a folder"),
            "choose a folder that is not under a regular file");
  }
  const int err = write_probe_error(at);
  if (err != 0) {
    SF_FAIL(cat(what, " '", dir.string(), "': cannot write in '", at.string(), "': ", std::strerror(err)),
            cat(when, ": choose a folder this user can write, or fix its permissions"));
  }
}

// The inputs a run must never replace, resolved as the readers resolve them.
std::vector<NamedPath> inputs_of(const FitConfig& config, const proto::Job& job, const fs::path& job_dir) {
  std::vector<NamedPath> inputs;
  const auto add_data = [&](const char* role, bool present, const proto::Dataset& data) {
    if (!present) return;
    if (data.has_x() && !data.x().path().empty()) {
      inputs.push_back(named(cat("data.", role, ".x.path"), resolve_path(job_dir, data.x().path())));
    }
    if (data.has_y() && !data.y().path().empty()) {
      inputs.push_back(named(cat("data.", role, ".y.path"), resolve_path(job_dir, data.y().path())));
    }
  };
  add_data("train", job.data().has_train(), job.data().train());
  add_data("validation", job.data().has_validation(), job.data().validation());
  add_data("test", job.data().has_test(), job.data().test());
  if (!config.initial_weights.empty()) inputs.push_back(named("outputs.initial_weights", config.initial_weights));
  if (!config.job_file.empty()) inputs.push_back(named("the job file", fs::absolute(config.job_file)));
  return inputs;
}

// A ModelCheckpoint pattern: its field, the folder its files go to and the file name pattern.
struct FilePattern {
  std::string field;
  fs::path folder;
  std::string file_name;
};

// One output of a fit, named both ways: field as fit's own check names it ("outputs.history_dir's history.json"),
// description as the commands name a file of the job, after "the job's " ("history file history.json
// (outputs.history_dir)").
struct FitOutput {
  std::string field;
  std::string description;
  fs::path path;         // a ModelCheckpoint name with {fields} keeps them
  bool pattern = false;  // the name has {fields}: a file per epoch, not one file
  OutputFolder folder;   // the folder this output is the first to write in (checked once); empty field: none
};

// Every output of the fit described by (config, job), in the order the writers meet them: the history files (when
// written; loss.svg when plotted), the checkpoint, the final weights file, the callbacks' files. Expects
// resolve_job_paths to have run. check_outputs and job_files both take their list from here.
std::vector<FitOutput> fit_outputs(const FitConfig& config, const proto::Job& job) {
  std::vector<FitOutput> outputs;
  if (config.write_history) {
    const HistoryFiles history = history_files(config.history_dir);
    std::vector<fs::path> paths = {history.json, history.run_json, history.pb, history.csv};
    if (config.plot) paths.push_back(history.loss_svg);
    for (const fs::path& path : paths) {
      const std::string name = path.filename().string();
      FitOutput& output = outputs.emplace_back();
      output.field = cat("outputs.history_dir's ", name);
      output.description = cat("history file ", name, " (outputs.history_dir)");
      output.path = path;
    }
    outputs.front().folder = {"outputs.history_dir", config.history_dir,
                              "fit writes the history there after every epoch"};
  }
  // Checked even when no periodic checkpoint is asked for: a stop signal writes one.
  outputs.push_back({"outputs.checkpoint_dir's checkpoint.pb",
                     "checkpoint checkpoint.pb (outputs.checkpoint_dir)",
                     checkpoint_path(config.checkpoint_dir),
                     false,
                     {"outputs.checkpoint_dir", config.checkpoint_dir,
                      "fit writes checkpoint.pb there at each periodic checkpoint and when a stop signal arrives"}});
  if (!config.export_weights.empty()) {
    // The default is a file the user never typed: say where it comes from.
    const std::string field = job.outputs().has_export_weights()
                                  ? "outputs.export_weights"
                                  : "outputs.export_weights, default <history_dir>/weights.npz";
    const std::string shown = job.outputs().has_export_weights() ? field : cat("the final weights file (", field, ")");
    outputs.push_back({shown,
                       cat("final weights file (", field, ")"),
                       config.export_weights,
                       false,
                       {shown + "'s folder", config.export_weights.parent_path(),
                        "fit writes the final weights there once, after the last epoch"}});
  }
  if (!config.timeline.path.empty()) {
    outputs.push_back({"--timeline",
                       "timeline file (--timeline)",
                       config.timeline.path,
                       false,
                       {"--timeline's folder", config.timeline.path.parent_path(),
                        "fit writes the timeline there once, after the last step"}});
  }
  for (int i = 0; i < job.callbacks_size(); ++i) {
    const proto::Callback& c = job.callbacks(i);
    FitOutput output;
    std::string when;
    if (c.has_model_checkpoint() && !c.model_checkpoint().filepath().empty()) {
      output.field = cat("callbacks[", i, "].model_checkpoint.filepath");
      output.description = cat("ModelCheckpoint file (", output.field, ")");
      output.path = c.model_checkpoint().filepath();
      when = "ModelCheckpoint saves the weights there at the end of an epoch";
    } else if (c.has_csv_logger() && !c.csv_logger().filename().empty()) {
      output.field = cat("callbacks[", i, "].csv_logger.filename");
      output.description = cat("CSVLogger file (", output.field, ")");
      output.path = c.csv_logger().filename();
      when = "CSVLogger appends a row there after every epoch";
    } else {
      continue;
    }
    const std::string text = output.path.string();
    const size_t brace = text.find('{');
    output.pattern = brace != std::string::npos;
    // A pattern's folder is the part before its first field; a field inside a folder name is checked from there on.
    const bool field_in_folder = output.pattern && text.find('/', brace) != std::string::npos;
    output.folder = {output.field + "'s folder",
                     field_in_folder ? fs::path(text.substr(0, brace)).parent_path() : output.path.parent_path(), when};
    outputs.push_back(std::move(output));
  }
  return outputs;
}

}  // namespace

void resolve_job_paths(const fs::path& job_dir, FitConfig& config, proto::Job& job) {
  config.history_dir = resolve_path(job_dir, config.history_dir.empty() ? fs::path(".") : config.history_dir);
  config.checkpoint_dir = resolve_path(job_dir, config.checkpoint_dir);
  config.export_weights = resolve_path(job_dir, config.export_weights);
  config.initial_weights = resolve_path(job_dir, config.initial_weights);
  for (auto& callback : *job.mutable_callbacks()) resolve_callback_paths(job_dir, callback);
}

void resolve_callback_paths(const fs::path& base_dir, proto::Callback& callback) {
  if (callback.has_model_checkpoint() && !callback.model_checkpoint().filepath().empty()) {
    auto* c = callback.mutable_model_checkpoint();
    c->set_filepath(resolve_path(base_dir, c->filepath()).string());
  }
  if (callback.has_csv_logger() && !callback.csv_logger().filename().empty()) {
    auto* c = callback.mutable_csv_logger();
    c->set_filename(resolve_path(base_dir, c->filename()).string());
  }
}

void check_outputs(const FitConfig& config, const proto::Job& job, const fs::path& job_dir) {
  const std::vector<NamedPath> inputs = inputs_of(config, job, job_dir);

  // Outputs with a fixed name, the folders they go to and the ModelCheckpoint patterns.
  std::vector<NamedPath> files;
  std::vector<OutputFolder> folders;
  std::vector<FilePattern> patterns;
  for (const FitOutput& output : fit_outputs(config, job)) {
    if (!output.folder.field.empty()) folders.push_back(output.folder);
    if (!output.pattern) {
      files.push_back(named(output.field, output.path));
    } else if (output.path.parent_path().string().find('{') == std::string::npos) {  // fields in the name only
      patterns.push_back(
          {output.field, named(output.field, output.folder.path).canonical, output.path.filename().string()});
    }
  }
  const fs::path checkpoint = checkpoint_path(config.checkpoint_dir);

  // 1. and 2.: no output replaces an input or another output.
  for (size_t i = 0; i < files.size(); ++i) {
    for (const NamedPath& input : inputs) {
      SF_CHECK(!same_file(files[i], input),
               cat(files[i].name, " ", shown(files[i]), " is the input ", input.name,
                   ": an output may not replace a file the run reads"),
               "choose another path for the output");
    }
    for (size_t j = 0; j < i; ++j) {
      SF_CHECK(!same_file(files[i], files[j]),
               cat(files[i].name, " ", shown(files[i]), " is also ", files[j].name,
                   ": two outputs would overwrite each other"),
               "give each output a path of its own");
    }
    // A file where another output needs a folder: the folder's writer would create it (or the file would land
    // on it) only after training, too late to say so.
    for (const OutputFolder& folder : folders) {
      if (folder.path.empty()) continue;
      const NamedPath dir = named(folder.field, folder.path);
      SF_CHECK(!is_within(dir.canonical, files[i].canonical),
               cat(files[i].name, " ", shown(files[i]),
                   dir.canonical == files[i].canonical ? " is also the folder " : " would have to be a folder for ",
                   folder.field, " ", shown(dir), ": one path cannot be both a file and a folder"),
               "give each output a path of its own");
    }
    std::error_code error;
    SF_CHECK(!fs::is_directory(files[i].path, error),
             cat(files[i].name, " ", shown(files[i]), " is a folder: expected a file path"),
             "name a file, inside that folder if that is where it belongs");
  }
  for (const FilePattern& pattern : patterns) {
    const std::regex re = pattern_regex(pattern.file_name);
    const auto clash = [&](const NamedPath& other) {
      return other.canonical.parent_path() == pattern.folder &&
             std::regex_match(other.canonical.filename().string(), re);
    };
    for (const NamedPath& input : inputs) {
      SF_CHECK(!clash(input),
               cat(pattern.field, " '", (pattern.folder / pattern.file_name).string(), "' can name the input ",
                   input.name, " ", shown(input), ": an output may not replace a file the run reads"),
               "choose another file name pattern");
    }
    for (const NamedPath& file : files) {
      SF_CHECK(!clash(file),
               cat(pattern.field, " '", (pattern.folder / pattern.file_name).string(), "' can name ", file.name, " ",
                   shown(file), ": two outputs would overwrite each other"),
               "give each output a path of its own");
    }
  }

  // 3.: every folder can be written now, not after the first epoch.
  for (const OutputFolder& folder : folders) {
    check_writable_folder(folder.path.empty() ? fs::path(".") : folder.path, folder.field, folder.when);
  }

  // 4.: a fresh run that writes checkpoints does not destroy another run's. (A run with periodic checkpoints off,
  // such as a benchmark, writes one only when a stop signal arrives.)
  const bool writes_checkpoints = config.checkpoint_every_epochs > 0 || config.checkpoint_every_steps > 0;
  std::error_code error;
  if (writes_checkpoints && !config.resume && !config.overwrite && fs::exists(checkpoint, error)) {
    SF_FAIL(cat("outputs.checkpoint_dir '", config.checkpoint_dir.string(),
                "' holds the checkpoint of an earlier run (checkpoint.pb): this fresh fit would replace it"),
            "pass --resume to continue that run, or --overwrite to start afresh and replace it");
  }
}

void check_command_output(const std::string& flag, const fs::path& output, const std::vector<InputFile>& inputs) {
  const NamedPath out = named(flag, fs::absolute(output));
  const std::string shown_output = cat(flag, " '", output.string(), "'");
  for (const InputFile& input : inputs) {
    if (input.path.empty()) continue;
    const NamedPath in = named(input.name, fs::absolute(input.path));
    SF_CHECK(!same_file(out, in),
             cat(shown_output, " is ", input.name, " '", input.path.string(),
                 "': an output may not replace a file the command reads or the job names"),
             "choose another path for the output");
  }
  std::error_code error;
  SF_CHECK(!fs::is_directory(out.path, error), cat(shown_output, " is a folder: expected a file path"));
  // The writers make no folders: a missing one would otherwise be found only after the computing, by the
  // temporary file beside the output.
  const fs::path folder = out.path.parent_path();
  SF_CHECK(fs::exists(folder, error), cat(shown_output, ": the folder '", folder.string(), "' does not exist"),
           "create it first, or choose an existing folder");
  SF_CHECK(fs::is_directory(folder, error), cat(shown_output, ": '", folder.string(), "' is a file, not a folder"),
           "choose a path in an existing folder");
  const int err = write_probe_error(folder);
  SF_CHECK(err == 0, cat(shown_output, ": cannot write in '", folder.string(), "': ", std::strerror(err)),
           "choose a folder this user can write, or fix its permissions");
}

std::vector<InputFile> job_files(const proto::Job& job, const fs::path& job_dir) {
  // Only the outputs section decides fit's paths. A copy without the fit options and the checkpoint periods keeps
  // resolve_fit_config's range checks out of the way: a job whose fit options are wrong can still be evaluated,
  // and its run's files are protected all the same.
  proto::Job paths_only;
  *paths_only.mutable_outputs() = job.outputs();
  paths_only.mutable_outputs()->clear_checkpoint_every_epochs();
  paths_only.mutable_outputs()->clear_checkpoint_every_steps();
  *paths_only.mutable_callbacks() = job.callbacks();
  FitConfig config = resolve_fit_config(paths_only, false);
  resolve_job_paths(job_dir, config, paths_only);

  std::vector<InputFile> files;
  for (NamedPath& input : inputs_of(config, job, job_dir)) {
    if (input.name == "the job file") continue;  // config.job_file is unset here; the commands add their own
    files.push_back({cat("the job's ", input.name), input.path});
  }
  // Every file a fit of this job could write, whatever its options say now: a history written with plot on is
  // still there after the job turned it off.
  config.write_history = true;
  config.plot = true;
  for (const FitOutput& output : fit_outputs(config, paths_only)) {
    // A name with {epoch}-like fields is a pattern, not one file; fit's own check covers those.
    if (!output.pattern) files.push_back({cat("the job's ", output.description), output.path});
  }
  return files;
}

}  // namespace shardfit
