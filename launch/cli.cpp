// Command-line parsing for shardfit: Keras-named flags that override the job file.
#include "launch/cli.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "kernels/error.h"

namespace shardfit {

namespace {

constexpr const char* kHint = "run `shardfit --help` for the flags";

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
  SF_CHECK(!value.empty() && *end == '\0' && errno == 0 && std::isfinite(v), cat(flag, " ", value, ": expected a number"),
           kHint);
  return v;
}

bool parse_bool(const std::string& flag, const std::string& value) {
  if (value == "true" || value == "1" || value == "yes") return true;
  if (value == "false" || value == "0" || value == "no") return false;
  SF_FAIL(cat(flag, " ", value, ": expected true or false"), kHint);
}

}  // namespace

std::string usage() {
  return R"(usage: shardfit fit JOB.pbtxt [flags]      train the job's model (run under mpirun / srun for several ranks)
       shardfit --help | --version

flags for fit (each overrides the job file's field of the same name):
  --epochs N               final epoch number (fit.epochs, default 1)
  --batch-size N           GLOBAL mini-batch, summed over all ranks (fit.batch_size, default 32)
  --validation-split F     fraction held out from the END of the data, before shuffling (default 0)
  --learning-rate F        the optimizer's learning rate (default: the optimizer's)
  --shuffle true|false     reshuffle the training samples every epoch (default true)
  --seed N                 weight init, shuffling and dropout (default 1337)
  --history DIR            where history.json / history.pb / history.csv go (outputs.history_dir, default .)
  --verbose 0|1|2          0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal, else 2)
Flags take their value as the next argument or after '=' (--epochs=10).
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
  SF_CHECK(args[0] == "fit", cat("unknown command '", args[0], "': expected fit"), kHint);
  command.name = "fit";

  auto* fit = command.overrides.mutable_fit();
  for (size_t i = 1; i < args.size(); ++i) {
    std::string flag = args[i];
    if (flag == "--help" || flag == "-h") {
      command.name = "help";
      return command;
    }
    if (flag.rfind("--", 0) != 0) {
      SF_CHECK(command.job_path.empty(), cat("unexpected argument '", flag, "': the job file is already '",
                                             command.job_path, "'"),
               kHint);
      command.job_path = flag;
      continue;
    }
    std::string value;
    if (const size_t eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    } else {
      SF_CHECK(i + 1 < args.size(), cat(flag, " needs a value"), kHint);
      value = args[++i];
    }
    if (flag == "--epochs") {
      fit->set_epochs(parse_int(flag, value, 1));
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
    } else if (flag == "--verbose") {
      const int64_t v = parse_int(flag, value, 0);
      SF_CHECK(v <= 2, cat(flag, " ", value, ": expected 0, 1 or 2"), kHint);
      fit->set_verbose(static_cast<int32_t>(v));
    } else if (flag == "--history") {
      SF_CHECK(!value.empty(), "--history needs a folder", kHint);
      command.overrides.mutable_outputs()->set_history_dir(value);
    } else {
      SF_FAIL(cat("unknown flag '", flag, "'"), kHint);
    }
  }
  SF_CHECK(!command.job_path.empty(), "fit needs a job file: expected `shardfit fit JOB.pbtxt [flags]`", kHint);
  return command;
}

void apply_overrides(const proto::Job& overrides, proto::Job& job) { job.MergeFrom(overrides); }

}  // namespace shardfit
