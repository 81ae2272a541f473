// Command-line parsing for shardfit: Keras-named flags that override the job file, and the inference / plot
// commands' options.
#include "launch/cli.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "dist/io/paths.h"
#include "dist/train/output_plan.h"
#include "kernels/error.h"
#include "kernels/job_file.h"

namespace shardfit {

namespace {

constexpr const char* kHint = "run `shardfit --help` for the commands and flags";

int64_t parse_int(const std::string& flag, const std::string& value, int64_t min) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  SF_CHECK(!value.empty() && *end == '\0' && errno == 0 && v >= min,
           cat(flag, " ", value, ": expected an integer >= ", min), kHint);
  return v;
}

double parse_double(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(value.c_str(), &end);
  SF_CHECK(!value.empty() && *end == '\0' && errno == 0 && std::isfinite(v),
           cat(flag, " ", value, ": expected a number"), kHint);
  return v;
}

bool parse_bool(const std::string& flag, const std::string& value) {
  if (value == "true" || value == "1" || value == "yes") return true;
  if (value == "false" || value == "0" || value == "no") return false;
  SF_FAIL(cat(flag, " ", value, ": expected true or false"), kHint);
}

// The flags each command accepts; --resume, --overwrite and --report-ranks take no value.
const std::set<std::string>& flags_of(const std::string& command) {
  static const std::set<std::string> fit{"--epochs",
                                         "--batch-size",
                                         "--validation-split",
                                         "--learning-rate",
                                         "--shuffle",
                                         "--seed",
                                         "--history",
                                         "--verbose",
                                         "--resume",
                                         "--callback",
                                         "--early-stopping",
                                         "--report-ranks",
                                         "--overwrite",
                                         "--watchdog-warn-seconds",
                                         "--watchdog-abort-seconds",
                                         "--timeline",
                                         "--timeline-steps",
                                         "--dtype-policy",
                                         "--reduce-dtype",
                                         "--overlap",
                                         "--bucket-bytes"};
  static const std::set<std::string> evaluate{"--weights", "--x", "--y", "--batch-size", "--output"};
  static const std::set<std::string> predict{"--weights", "--x", "--output", "--batch-size"};
  static const std::set<std::string> plot{"--metric", "--output"};
  static const std::set<std::string> bench{"--model",        "--mode",     "--batch-size",     "--warmup-steps",
                                           "--steps",        "--json",     "--optimizer",      "--learning-rate",
                                           "--seed",         "--timeline", "--timeline-steps", "--dtype-policy",
                                           "--reduce-dtype", "--overlap",  "--bucket-bytes"};
  if (command == "fit") return fit;
  if (command == "bench") return bench;
  if (command == "evaluate") return evaluate;
  if (command == "predict") return predict;
  return plot;
}

// --timeline and --timeline-steps, the same for fit and bench. The file is checked like the commands' other outputs
// once the inputs are known (dist/train/output_plan.h); here only its name.
void apply_timeline_flag(Command& command, const std::string& flag, const std::string& value) {
  if (flag == "--timeline") {
    SF_CHECK(!value.empty(), "--timeline needs a file: where the Chrome-trace / Perfetto JSON goes", kHint);
    SF_CHECK(std::filesystem::path(value).extension() == ".json",
             cat("--timeline ", value, ": expected a file ending in .json (a Chrome-trace / Perfetto JSON)"), kHint);
    command.timeline = resolve_path({}, value).string();
  } else {
    command.timeline_steps = parse_step_range(value, flag);
    command.timeline_steps_given = true;
  }
}

void apply_fit_flag(Command& command, const std::string& flag, const std::string& value) {
  auto* fit = command.overrides.mutable_fit();
  if (flag == "--timeline" || flag == "--timeline-steps") {
    apply_timeline_flag(command, flag, value);
  } else if (flag == "--epochs") {
    fit->set_epochs(parse_int(flag, value, 0));  // 0: train nothing, as Keras's fit(epochs=0)
  } else if (flag == "--batch-size") {
    fit->set_batch_size(parse_int(flag, value, 1));
  } else if (flag == "--validation-split") {
    const double v = parse_double(flag, value);
    SF_CHECK(v >= 0.0 && v < 1.0, cat(flag, " ", value, ": expected a fraction in [0, 1)"), kHint);
    fit->set_validation_split(v);
  } else if (flag == "--learning-rate") {
    const double v = parse_double(flag, value);
    SF_CHECK(v > 0.0, cat(flag, " ", value, ": expected a positive number"), kHint);
    fit->set_learning_rate(static_cast<float>(v));
  } else if (flag == "--shuffle") {
    fit->set_shuffle(parse_bool(flag, value));
  } else if (flag == "--seed") {
    fit->set_seed(static_cast<uint64_t>(parse_int(flag, value, 0)));
  } else if (flag == "--dtype-policy") {
    SF_CHECK(value == "float32" || value == "mixed_bfloat16",
             cat(flag, " ", value, ": expected float32 or mixed_bfloat16"), kHint);
    command.overrides.mutable_model()->set_dtype_policy(value);
  } else if (flag == "--reduce-dtype") {
    SF_CHECK(value == "float32" || value == "bfloat16", cat(flag, " ", value, ": expected float32 or bfloat16"), kHint);
    fit->set_reduce_dtype(value);
  } else if (flag == "--verbose") {
    const int64_t v = parse_int(flag, value, 0);
    SF_CHECK(v <= 2, cat(flag, " ", value, ": expected 0, 1 or 2"), kHint);
    fit->set_verbose(static_cast<int32_t>(v));
  } else if (flag == "--history") {
    SF_CHECK(!value.empty(), "--history needs a folder", kHint);
    // Made absolute against the working directory: as a job field it would resolve against the job file's folder.
    command.overrides.mutable_outputs()->set_history_dir(resolve_path({}, value).string());
  } else if (flag == "--callback") {
    // The job file's own syntax for one callback, so every option of every callback is reachable from the flag.
    proto::Callback callback;
    parse_text_message(value, "--callback", callback);
    SF_CHECK(callback.kind_case() != proto::Callback::KIND_NOT_SET,
             cat("--callback '", value,
                 "': expected one callback in job-file syntax, e.g. --callback "
                 "'early_stopping { patience: 3 restore_best_weights: true }'"),
             "the callbacks and their fields are in proto/shardfit.proto (message Callback)");
    resolve_callback_paths({}, callback);  // relative to the working directory, as every path on the command line
    *command.overrides.add_callbacks() = callback;
  } else if (flag == "--watchdog-warn-seconds" || flag == "--watchdog-abort-seconds") {
    const double v = parse_double(flag, value);
    SF_CHECK(v >= 0.0, cat(flag, " ", value, ": expected seconds >= 0 (0 turns it off)"), kHint);
    if (flag == "--watchdog-warn-seconds") {
      fit->set_watchdog_warn_seconds(v);
    } else {
      fit->set_watchdog_abort_seconds(v);
    }
  } else if (flag == "--overlap") {
    SF_CHECK(value == "on" || value == "off", cat(flag, " ", value, ": expected on or off"), kHint);
    fit->set_overlap(value == "on");
  } else if (flag == "--bucket-bytes") {
    const int64_t bytes = parse_int(flag, value, 4);
    SF_CHECK(bytes % 4 == 0, cat(flag, " ", value, ": expected a multiple of 4 (whole floats), e.g. 4194304 (4 MiB)"),
             kHint);
    fit->set_bucket_bytes(bytes);
  } else if (flag == "--early-stopping") {
    command.overrides.add_callbacks()->mutable_early_stopping()->set_patience(parse_int(flag, value, 0));
  }
}

void apply_bench_flag(Command& command, const std::string& flag, const std::string& value) {
  if (flag == "--model") {
    SF_CHECK(!value.empty(), "--model needs a preset name: mlp, wide or convnet", kHint);
    command.model = value;
  } else if (flag == "--mode") {
    SF_CHECK(value == "strong" || value == "weak",
             cat("--mode ", value, ": expected strong (a fixed global batch) or weak (a fixed batch per rank)"), kHint);
    command.mode = value;
  } else if (flag == "--batch-size") {
    command.batch_size = parse_int(flag, value, 1);
  } else if (flag == "--warmup-steps") {
    command.warmup_steps = parse_int(flag, value, 0);
  } else if (flag == "--steps") {
    command.steps = parse_int(flag, value, 1);
  } else if (flag == "--json") {
    SF_CHECK(!value.empty(), "--json needs a file: the JSON Lines file each run appends its record to", kHint);
    command.json = value;
  } else if (flag == "--optimizer") {
    auto* optimizer = command.overrides.mutable_optimizer();
    if (value == "sgd") {
      optimizer->mutable_sgd();
    } else if (value == "adam") {
      optimizer->mutable_adam();
    } else if (value == "rmsprop") {
      optimizer->mutable_rmsprop();
    } else {
      SF_FAIL(cat("--optimizer ", value, ": expected sgd, adam or rmsprop"), kHint);
    }
  } else {
    apply_fit_flag(command, flag, value);  // --learning-rate, --seed, --timeline*: as fit reads them
  }
}

}  // namespace

std::string usage() {
  return R"(usage: shardfit fit JOB.pbtxt [flags]          train the job's model (under mpirun / srun for several ranks)
       shardfit evaluate JOB.pbtxt --weights W [--x X --y Y] [--batch-size N] [--output M.json]
                                                 loss and metrics on a test set (default: the job's data.test);
                                                 --output also writes them at full precision as JSON
       shardfit predict JOB.pbtxt --weights W [--x X] --output P.npy [--batch-size N]
                                                 the model's outputs, one row per input row, in input order.
                                                 W: the weights .npz fit writes, or a checkpoint.pb
       shardfit plot HISTORY [--metric NAME]... [-o|--output FILE.svg]
                                                 training and validation curves as SVG. HISTORY: the history
                                                 folder, history.json, history.csv or history.pb. Default metric
                                                 loss; each metric goes to METRIC.svg next to the history, or with
                                                 -o all into FILE.svg, one panel per metric
       shardfit plot RECORDS.jsonl [-o|--output FILE.svg]
                                                 the scaling chart of `bench --json` records (told by content):
                                                 speedup and efficiency against ranks, one line per series, to
                                                 FILE.svg (default scaling.svg beside the records) and the table
                                                 to FILE.md beside it and to stdout
       shardfit bench [JOB.pbtxt | --model mlp|wide|convnet] [--mode strong|weak] [--batch-size N] [--steps N]
                      [--warmup-steps N] [--json FILE] [--timeline FILE.json [--timeline-steps A:B]]
                                                 the scaling benchmark: the training step on synthetic data
                                                 made on each rank (no file read), timed per phase on every
                                                 rank; rank 0 prints a table and appends one JSON record to FILE
       shardfit --help | --version

flags for bench (README.md, "Scaling benchmark", says what each reported field means):
  --model mlp|wide|convnet a preset: mlp 784-1024-1024-10, wide 4096-4096-4096-10 (relu, softmax, sgd), convnet
                           the Fashion-MNIST convnet (28x28x1, Conv2D 32 and 64, 3x3, each with 2x2 max pooling,
                           Dense 128, 10); or give a job file instead, whose model (with model.input_dim or
                           model.input_shape set), loss and optimizer are used
  --mode strong|weak       strong: --batch-size is the global batch, split over the ranks; weak: --batch-size is
                           each rank's batch, the global batch grows with the ranks (default strong)
  --batch-size N           see --mode (default 256)
  --warmup-steps N         steps run first and not measured (default 5)
  --steps N                measured steps (default 20)
  --json FILE              append the run's record to FILE, one JSON object per line (the file is rewritten
                           atomically with the new line)
  --optimizer sgd|adam|rmsprop   the optimizer, with its defaults (default: the job's, else sgd)
  --learning-rate F, --seed N, --timeline FILE.json, --timeline-steps A:B, --dtype-policy P, --reduce-dtype D,
  --overlap on|off, --bucket-bytes N
                           as for fit (bench's steps are numbered from 1 over the warm-up and then the measured
                           steps)

flags for fit (each overrides the job file's field of the same name):
  --epochs N               final epoch number (fit.epochs, default 1; 0 trains nothing: the seeded initial weights
                           go to outputs.export_weights)
  --batch-size N           GLOBAL mini-batch, summed over all ranks (fit.batch_size, default 32)
  --validation-split F     fraction held out from the END of the data, before shuffling (default 0)
  --learning-rate F        the optimizer's learning rate (default: the optimizer's)
  --shuffle true|false     reshuffle the training samples every epoch (default true)
  --seed N                 weight init, shuffling and dropout (default 1337)
  --dtype-policy P         float32 or mixed_bfloat16: bf16 matmuls, f32 weights, loss and gradients
                           (model.dtype_policy, default float32; float32 with a warning on a CPU without bf16)
  --reduce-dtype D         float32 or bfloat16: the dtype the gradients travel in between ranks; bfloat16 sends
                           half the bytes, each gradient and each partial sum rounded to bf16 (fit.reduce_dtype,
                           default float32; the loss, stop signals and the first, small bucket stay f32)
  --history DIR            where history.json, run.json, history.pb / .csv, loss.svg and weights.npz go
                           (outputs.history_dir, default: the job file's folder)
  --verbose 0|1|2          0 silent, 1 progress bar, 2 one line per epoch (default: 1 for one process run by hand
                           on a terminal; 2 into a file and under mpirun / srun, where 1 asks for the bar)
  --resume                 continue from the last checkpoint in outputs.checkpoint_dir (default
                           HISTORY/checkpoints) if there is one; start afresh otherwise
  --overwrite              start afresh even where an earlier run's checkpoint is, replacing it (without
                           --resume or --overwrite, fit refuses to destroy that checkpoint)
  --report-ranks           one line per rank at start, in rank order: host, local rank, threads, samples per step
                           (otherwise rank 0 prints only its own lines)
  --early-stopping N       add EarlyStopping(monitor val_loss, patience N)
  --callback TEXT          add one callback written as in the job file (repeatable), e.g.
                           --callback 'reduce_lr_on_plateau { factor: 0.5 patience: 2 }'
  --watchdog-warn-seconds S    a rank that makes no progress for S seconds (a stopped or dead peer, a dropped link)
                           says which rank it is and the phase it waits in (fit.watchdog_warn_seconds, default 60)
  --watchdog-abort-seconds S   after S seconds without progress the job ends with status 70, the last checkpoint
                           and history intact (fit.watchdog_abort_seconds, default 600). S must exceed the longest
                           phase of the run (a checkpoint write, an allreduce on a slow network). 0 turns either off
  --timeline FILE.json     write a Chrome-trace / Perfetto JSON of every rank's steps (load, forward, backward,
                           allreduce and each bucket's, optimizer), validation, checkpoints and history writes,
                           one track per rank on rank 0's clock, to FILE (open it in ui.perfetto.dev)
  --timeline-steps A:B     the global steps (from 1, across epochs) the timeline records (default 1:200), and
                           the epochs' spans of the epochs they touch; a range the run never reaches gives a file
                           with the tracks only. At most 100000 spans a rank (the rest are counted as dropped)
  --overlap on|off         sum each gradient bucket over the ranks while backward computes the rest, on a
                           communication thread (fit.overlap, default off); the same result bit for bit
  --bucket-bytes N         bytes per gradient bucket, the unit of the allreduce: a multiple of 4, at least 4
                           (fit.bucket_bytes, default 4194304); only the speed changes, never a value
Flags take their value as the next argument or after '=' (--epochs=10).

paths: every relative path inside a job file (data, outputs, callbacks' files) is relative to the job file's
folder; every path on the command line (--history, --callback files, --weights, --x, --y, --output) is relative
to the working directory. fit writes the final weights to HISTORY/weights.npz unless outputs.export_weights
names another file ("" for none), and refuses at setup any output that would replace an input or another
output, or that lies in a folder it cannot write. evaluate / predict --output and plot -o are refused the same
way before anything is computed: an output that is a file the command reads (data, weights, job file, history
files) or any other file the job names or its fit writes (data.train / validation / test, initial_weights, the
run's history files, checkpoint and final weights), or whose folder does not exist or cannot be written;
predict --output must end in .npy, evaluate --output in .json, plot -o in .svg.

exit status: 0 done; 1 an error (printed once, naming the rank); 70 a rank made no progress for
--watchdog-abort-seconds (each waiting rank names its phase); 75 stopped by SIGINT (Ctrl-C), SIGTERM or SIGUSR1
after writing a checkpoint (run again with --resume to continue; a second Ctrl-C ends the process at once). Open
MPI's mpirun passes on SIGUSR1 only: Ctrl-C or SIGTERM to mpirun aborts the job with status 1, so stop an mpirun
job with `kill -USR1 <mpirun pid>`, or start it with launch/mpirun_local.sh, which does that on Ctrl-C. srun ends
the step on SIGTERM; SIGUSR1 to srun, or scancel --signal=INT|TERM|USR1, reaches every rank.
)";
}

Command parse_command_line(const std::vector<std::string>& args) {
  Command command;
  if (args.empty()) SF_FAIL("no command given: expected `shardfit fit JOB.pbtxt [flags]`", kHint);
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    command.name = "help";
    return command;
  }
  if (args[0] == "--version" || args[0] == "version") {
    command.name = "version";
    return command;
  }
  SF_CHECK(args[0] == "fit" || args[0] == "evaluate" || args[0] == "predict" || args[0] == "plot" || args[0] == "bench",
           cat("unknown command '", args[0], "': expected fit, evaluate, predict, plot or bench"), kHint);
  command.name = args[0];
  const auto& accepted = flags_of(command.name);

  for (size_t i = 1; i < args.size(); ++i) {
    std::string flag = args[i];
    const bool short_output = flag == "-o" && accepted.count("--output") != 0;  // the short form of --output
    if (short_output) flag = "--output";
    if (flag == "--help" || flag == "-h") {
      command.name = "help";
      return command;
    }
    SF_CHECK(flag.size() < 2 || flag[0] != '-' || flag[1] == '-', cat("unknown flag '", flag, "' for ", command.name),
             kHint);
    if (flag.rfind("--", 0) != 0) {
      SF_CHECK(command.job_path.empty(),
               cat("unexpected argument '", flag, "': the ", command.name == "plot" ? "history" : "job file",
                   " is already '", command.job_path, "'"),
               kHint);
      command.job_path = flag;
      continue;
    }
    std::string value;
    const size_t eq = flag.find('=');
    if (eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    SF_CHECK(accepted.count(flag) != 0, cat("unknown flag '", flag, "' for ", command.name), kHint);
    if (flag == "--resume" || flag == "--overwrite" || flag == "--report-ranks") {
      SF_CHECK(eq == std::string::npos, cat(flag, " takes no value"), kHint);
      (flag == "--resume" ? command.resume : flag == "--overwrite" ? command.overwrite : command.report_ranks) = true;
      continue;
    }
    if (eq == std::string::npos) {
      SF_CHECK(i + 1 < args.size(), cat(flag, " needs a value"), kHint);
      value = args[++i];
    }
    if (command.name == "fit") {
      apply_fit_flag(command, flag, value);
    } else if (command.name == "bench") {
      apply_bench_flag(command, flag, value);
    } else if (flag == "--batch-size") {
      command.batch_size = parse_int(flag, value, 1);
    } else {
      SF_CHECK(!value.empty(), cat(flag, " needs a value"), kHint);
      if (flag == "--weights") command.weights = value;
      if (flag == "--x") command.x = value;
      if (flag == "--y") command.y = value;
      if (flag == "--output") {
        command.output = value;
        command.output_flag = short_output ? "-o" : "--output";  // as typed, for the messages about it
      }
      if (flag == "--metric") command.metrics.push_back(value);
    }
  }
  SF_CHECK(!command.timeline_steps_given || !command.timeline.empty(),
           "--timeline-steps needs --timeline FILE.json: the steps it selects go to that file", kHint);
  if (command.name == "plot") {
    SF_CHECK(!command.job_path.empty(), "plot needs a history: expected `shardfit plot HISTORY_DIR_OR_FILE`", kHint);
    if (command.metrics.empty()) command.metrics.push_back("loss");
    return command;
  }
  if (command.name == "bench") {
    SF_CHECK(command.job_path.empty() != command.model.empty(),
             command.model.empty()
                 ? "bench needs a model: expected `shardfit bench --model mlp|wide|convnet` or a job file"
                 : cat("bench got both a job file ('", command.job_path, "') and --model ", command.model,
                       ": expected one of them"),
             kHint);
    return command;
  }
  SF_CHECK(!command.job_path.empty(),
           cat(command.name, " needs a job file: expected `shardfit ", command.name, " JOB.pbtxt [flags]`"), kHint);
  SF_CHECK(!(command.resume && command.overwrite),
           "--resume and --overwrite contradict each other: --resume continues the checkpoint, --overwrite replaces "
           "it",
           kHint);
  if (command.name == "predict") {
    SF_CHECK(!command.output.empty(), "predict needs --output FILE.npy", kHint);
  }
  if (command.name != "fit") {
    SF_CHECK(!command.weights.empty(),
             cat(command.name, " needs --weights FILE: the .npz fit exports, or a checkpoint.pb it wrote"), kHint);
  }
  return command;
}

void apply_overrides(const proto::Job& overrides, proto::Job& job) { job.MergeFrom(overrides); }

}  // namespace shardfit
