// End-to-end tests of the shardfit executable, run from outside MPI: starts `mpirun -np P shardfit ...` (P <= 4) and
// checks exit statuses, wall time, the console and the history files a user gets. Not an MPI test itself.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dist/io/history_writer.h"
#include "dist/io/npy_writer.h"
#include "dist/io/weights_io.h"
#include "kernels/job_file.h"
#include "kernels/model_factory.h"
#include "kernels/precision.h"
#include "tests/support/cli_fixture.h"
#include "tests/support/launch_process.h"

namespace {

namespace fs = std::filesystem;
using shardfit::testing::count_of;
using shardfit::testing::describe;
using shardfit::testing::digits_dir;
using shardfit::testing::error_message;
using shardfit::testing::FreshDirTest;
using shardfit::testing::Launch;
using shardfit::testing::mpirun_command;
using shardfit::testing::quoted;
using shardfit::testing::rank_statuses;
using shardfit::testing::Ranks;
using shardfit::testing::read_bytes;
using shardfit::testing::replaced;
using shardfit::testing::shardfit_bin;
using shardfit::testing::source_dir;
using shardfit::testing::Watch;
using shardfit::testing::write_small_data;
using shardfit::testing::write_text;

constexpr double kLimitSeconds = shardfit::testing::kFailureLimitSeconds;
constexpr double kKillSeconds = 40.0;  // no launch is waited for longer than this

// mpirun with one application context per element of contexts (see Watch), waited for at most kKillSeconds.
Launch run_mpi(const std::vector<Ranks>& contexts, Watch watch) {
  return shardfit::testing::run_mpirun(contexts, watch, kKillSeconds);
}

// The failure contract (ARCHITECTURE.md; cli_fixture.h), agreed rather than aborted, with a message that names a
// rank and where it was raised. Returns the message for the case's own checks.
std::string expect_failure_on_every_rank(const Launch& launch, int ranks, const std::string& name) {
  const std::string message = shardfit::testing::expect_failure_on_every_rank(launch, ranks);
  EXPECT_EQ(count_of(launch.err, "MPI_ABORT"), 0) << "a setup error is agreed, not aborted\n" << describe(launch);
  std::printf("[cli] %-28s %d ranks: every rank exited non-zero, job over after %.3f s\n", name.c_str(), ranks,
              launch.seconds);
  EXPECT_TRUE(std::regex_search(message, std::regex(R"(^error on rank \d+ \([^)]+:\d+\): )"))) << message;
  return message;
}

// `word` occurs in text as a whole number or identifier, not as part of a longer one ("10" is not in "100").
bool mentions(const std::string& text, const std::string& word) {
  return std::regex_search(text, std::regex("(^|[^0-9A-Za-z_])" + word + "($|[^0-9A-Za-z_])"));
}

// A tiny job on synthetic data, for the failures: 24 samples of 64 features, class ids 0..9 (x.npy, y.npy).
constexpr const char* kSmallJob = R"(model {
  layers { dense { units: 16 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
metrics: "accuracy"
fit { epochs: 1 batch_size: 8 verbose: 0 }
data { train { x { path: "x.npy" } y { path: "y.npy" } } }
outputs { history_dir: "history" }
)";

constexpr int64_t kSmallRows = 24;  // write_small_data's default
constexpr int64_t kFeatures = shardfit::testing::kSmallFeatures;

// The bundled digits job with its data paths made absolute, so the job file can live anywhere.
std::string digits_job() {
  const std::string text = read_bytes(digits_dir() / "mlp.pbtxt");
  EXPECT_FALSE(text.empty()) << digits_dir() / "mlp.pbtxt";
  // "x.npy" becomes "/.../examples/digits/x.npy".
  return replaced(replaced(text, "\"x.npy\"", quoted(digits_dir() / "x.npy")), "\"y.npy\"",
                  quoted(digits_dir() / "y.npy"));
}

// Each test works in a fresh folder, which is also every rank's working directory; kept when the test failed.
class CliTest : public FreshDirTest {
 protected:
  CliTest() : FreshDirTest("cli") {}

  // shardfit with `args` on `ranks` ranks, all working in dir_.
  Launch run(int ranks, const std::vector<std::string>& args, Watch watch) const {
    return run_mpi({{ranks, dir_, args}}, watch);
  }
};

// --- success: the digits job end to end --------------------------------------------------------------------------

// The values history.json holds, as tests/python/read_history.py prints them after checking json against csv (and
// against history.pb when Python's protobuf is installed): key -> list.
struct PythonView {
  std::map<std::string, std::vector<double>> keys;
  std::vector<int64_t> epochs;
  std::map<std::string, std::string> params;
};

PythonView read_with_python(const fs::path& history_dir) {
  const Launch launch = shardfit::testing::launch_process(
      {"/usr/bin/python3", (source_dir() / "tests" / "python" / "read_history.py").string(), history_dir.string()},
      kKillSeconds);
  EXPECT_EQ(launch.exit_code, 0) << "read_history.py found the files inconsistent\n" << describe(launch);
  PythonView view;
  std::istringstream lines(launch.out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "key") {
      std::string name, value;
      words >> name;
      while (words >> value) view.keys[name].push_back(std::strtod(value.c_str(), nullptr));  // repr round-trips
    } else if (kind == "epoch") {
      for (int64_t e; words >> e;) view.epochs.push_back(e);
    } else if (kind == "param") {
      std::string name, value;
      words >> name >> value;
      view.params[name] = value;
    }
  }
  return view;
}

// The four files are there, history.pb holds `epochs` records with the Keras keys, and history.json (read by
// Python) holds exactly the same doubles.
shardfit::proto::History expect_complete_history(const fs::path& history_dir, int64_t epochs) {
  for (const char* name : {"history.json", "run.json", "history.pb", "history.csv"}) {
    EXPECT_TRUE(fs::is_regular_file(history_dir / name)) << history_dir / name;
  }
  shardfit::proto::History history;
  try {
    history = shardfit::read_history_pb(history_dir / "history.pb");
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
    return history;
  }
  EXPECT_EQ(history.epochs_size(), epochs);
  const std::set<std::string> expected_keys = {"accuracy", "loss", "val_accuracy", "val_loss"};
  for (int i = 0; i < history.epochs_size(); ++i) {
    const auto& record = history.epochs(i);
    EXPECT_EQ(record.epoch(), i);
    std::set<std::string> keys;
    for (const auto& [key, value] : record.values()) {
      keys.insert(key);
      EXPECT_TRUE(std::isfinite(value)) << key << " in epoch " << i;
    }
    EXPECT_EQ(keys, expected_keys) << "epoch " << i;
  }

  const PythonView json = read_with_python(history_dir);
  std::vector<int64_t> pb_epochs;
  for (const auto& record : history.epochs()) pb_epochs.push_back(record.epoch());
  EXPECT_EQ(json.epochs, pb_epochs);
  EXPECT_EQ(json.keys.size(), expected_keys.size());
  for (const std::string& key : expected_keys) {
    std::vector<double> pb_values;
    for (const auto& record : history.epochs()) pb_values.push_back(record.values().at(key));
    EXPECT_EQ(json.keys.count(key) ? json.keys.at(key) : std::vector<double>{}, pb_values)
        << key << ": history.json and history.pb differ";
  }
  const auto& p = history.params();
  const std::map<std::string, int64_t> pb_params = {{"epochs", p.epochs()},
                                                    {"steps", p.steps()},
                                                    {"world_size", p.world_size()},
                                                    {"global_batch", p.global_batch()},
                                                    {"train_samples", p.train_samples()},
                                                    {"validation_samples", p.validation_samples()},
                                                    {"bucket_bytes", p.bucket_bytes()}};
  for (const auto& [name, value] : pb_params) {
    EXPECT_EQ(json.params.count(name) ? json.params.at(name) : "(missing)", std::to_string(value)) << "params." << name;
  }
  // Python's str() of the JSON boolean.
  EXPECT_EQ(json.params.count("overlap") ? json.params.at("overlap") : "(missing)", p.overlap() ? "True" : "False");
  // The precision it ran in and the dtype its gradients travelled in: float32 unless asked otherwise.
  for (const auto& [name, value] :
       std::map<std::string, std::string>{{"dtype_policy", p.dtype_policy()}, {"reduce_dtype", p.reduce_dtype()}}) {
    EXPECT_FALSE(value.empty()) << "params." << name;
    EXPECT_EQ(json.params.count(name) ? json.params.at(name) : "(missing)", value) << "params." << name;
  }
  return history;
}

TEST_F(CliTest, DigitsEndToEndOnTwoRanks) {
  write_text(dir_ / "mlp.pbtxt", digits_job());
  const fs::path history_dir = dir_ / "history";
  const Launch launch =
      run(2, {"fit", (dir_ / "mlp.pbtxt").string(), "--epochs", "3", "--history", history_dir.string()}, Watch::kPlain);
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  std::printf("[cli] digits, 3 epochs on 2 ranks: %.3f s\n", launch.seconds);

  const shardfit::proto::History history = expect_complete_history(history_dir, 3);
  EXPECT_EQ(history.params().world_size(), 2);
  EXPECT_EQ(history.params().global_batch(), 32);
  EXPECT_EQ(history.params().epochs(), 3);
  EXPECT_EQ(history.params().train_samples(), 1437);  // floor(1797 * 0.8)
  EXPECT_EQ(history.params().validation_samples(), 360);
  EXPECT_EQ(history.params().steps(), 45);  // ceil(1437 / 32)
  EXPECT_EQ(history.params().verbose(), 2) << "under mpirun the default is one line per epoch";
  EXPECT_FALSE(history.params().overlap()) << "run.json says overlap was off (the default)";
  EXPECT_EQ(history.params().bucket_bytes(), int64_t{4} << 20) << "the default bucket";

  // Rank 0 alone prints, one line per epoch: each epoch's header and summary line exactly once, no redraws.
  for (int epoch = 1; epoch <= 3; ++epoch) {
    EXPECT_EQ(count_of(launch.out, "Epoch " + std::to_string(epoch) + "/3\n"), 1) << describe(launch);
  }
  EXPECT_EQ(count_of(launch.out, "Epoch "), 3) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "45/45 "), 3) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "shardfit: 2 rank(s)"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "\r"), 0) << "no progress bar under mpirun\n" << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error"), 0) << describe(launch);
}

TEST_F(CliTest, ZeroEpochsExportsTheSeededInitialWeights) {
  // Keras's fit(epochs=0) trains nothing; here that exports the seeded initial weights, with an empty history.
  write_small_data(dir_);
  const auto job_with_export = [&](const std::string& weights) {
    return replaced(kSmallJob, "outputs { history_dir: \"history\" }",
                    "outputs { history_dir: \"history\" export_weights: " + quoted(dir_ / weights) + " }");
  };
  write_text(dir_ / "two.pbtxt", job_with_export("two.npz"));
  write_text(dir_ / "one.pbtxt", job_with_export("one.npz"));
  write_text(dir_ / "other_seed.pbtxt", job_with_export("other_seed.npz"));
  const fs::path history_dir = dir_ / "history";
  const Launch two =
      run(2, {"fit", "two.pbtxt", "--epochs", "0", "--seed", "7", "--verbose", "2", "--history", history_dir.string()},
          Watch::kPlain);
  ASSERT_EQ(two.exit_code, 0) << describe(two);
  EXPECT_EQ(count_of(two.out + two.err, "error"), 0) << describe(two);
  EXPECT_EQ(count_of(two.out, "Epoch "), 0) << describe(two);

  // An empty but valid history: no epochs, the params say 0, the verdict is undetermined; history.json loads and
  // its per-epoch lists are empty (Keras's history.history after fit(epochs=0) is {}).
  shardfit::proto::History history;
  try {
    history = shardfit::read_history_pb(history_dir / "history.pb");
  } catch (const std::exception& e) {
    FAIL() << e.what() << "\n" << describe(two);
  }
  ASSERT_FALSE(history.diagnosis().summary().empty()) << describe(two);  // count_of needs a non-empty needle
  EXPECT_EQ(history.epochs_size(), 0);
  EXPECT_EQ(history.params().epochs(), 0);
  EXPECT_EQ(history.diagnosis().verdict(), "undetermined") << history.diagnosis().summary();
  EXPECT_EQ(count_of(two.out, history.diagnosis().summary()), 1) << describe(two);
  const Launch json = shardfit::testing::launch_process(
      {"/usr/bin/python3", "-c",
       "import json, sys; h = json.load(open(sys.argv[1])); print(sum(len(v) for v in h.values() if isinstance(v, "
       "list)))",
       (history_dir / "history.json").string()},
      kKillSeconds);
  EXPECT_EQ(json.exit_code, 0) << describe(json);
  EXPECT_EQ(json.out, "0\n") << describe(json);

  // The exported weights are the model initialised with the seed, whatever the rank count; another seed differs.
  const shardfit::proto::Job job = shardfit::read_job_file(dir_ / "two.pbtxt");
  const auto exported = shardfit::build_model(job, kFeatures);
  ASSERT_NO_THROW(shardfit::load_weights(dir_ / "two.npz", *exported));
  const std::vector<float> weights(exported->parameters().begin(), exported->parameters().end());
  const auto seeded = shardfit::build_model(job, kFeatures);
  seeded->initialize(7);
  EXPECT_EQ(weights, std::vector<float>(seeded->parameters().begin(), seeded->parameters().end()));

  const Launch one =
      run(1, {"fit", "one.pbtxt", "--epochs", "0", "--seed", "7", "--history", history_dir.string()}, Watch::kPlain);
  ASSERT_EQ(one.exit_code, 0) << describe(one);
  EXPECT_EQ(read_bytes(dir_ / "one.npz"), read_bytes(dir_ / "two.npz")) << "1 rank and 2 ranks export the same file";
  const Launch other = run(
      2, {"fit", "other_seed.pbtxt", "--epochs", "0", "--seed", "8", "--history", history_dir.string()}, Watch::kPlain);
  ASSERT_EQ(other.exit_code, 0) << describe(other);
  EXPECT_NE(read_bytes(dir_ / "other_seed.npz"), read_bytes(dir_ / "two.npz")) << "another seed, other weights";
}

// Carriage returns that redraw a line in place; a pseudo-terminal turns every "\n" into "\r\n", which is not one.
int count_redraws(const std::string& out) {
  int count = 0;
  for (size_t i = 0; i + 1 < out.size(); ++i) count += out[i] == '\r' && out[i + 1] != '\n' ? 1 : 0;
  return count;
}

// A command line for `sh -c`: each argument in single quotes.
std::string shell_words(const std::vector<std::string>& args) {
  std::string line;
  for (const std::string& arg : args) {
    std::string quoted_arg = "'";
    for (const char c : arg) quoted_arg += c == '\'' ? std::string("'\\''") : std::string(1, c);
    line += (line.empty() ? "" : " ") + quoted_arg + "'";
  }
  return line;
}

// A person runs one process at a terminal: Keras's live bar, redrawn in place. The same run into a file (a log),
// or any run under mpirun, prints one line per epoch; under mpirun --verbose 1 asks for the bar. The terminal is a
// real pseudo-terminal (util-linux's `script`), so MPI_Init's singleton start runs exactly as at a prompt.
TEST_F(CliTest, ProgressBarRedrawsOnATerminalAndOneLinePerEpochInALog) {
  if (::access("/usr/bin/script", X_OK) != 0) GTEST_SKIP() << "/usr/bin/script (util-linux) not found";
  write_text(dir_ / "mlp.pbtxt", digits_job());
  const std::vector<std::string> fit = {shardfit_bin(), "fit", (dir_ / "mlp.pbtxt").string(), "--epochs", "2"};
  const auto with = [&](std::vector<std::string> args, const std::vector<std::string>& more) {
    args.insert(args.end(), more.begin(), more.end());
    return args;
  };

  // 1. One process at a terminal: the bar is drawn at the first step and at least once more when the epoch ends.
  const Launch terminal = shardfit::testing::launch_process(
      {"/usr/bin/script", "-qfec", shell_words(with(fit, {"--history", (dir_ / "h1").string()})), "/dev/null"},
      kKillSeconds);
  ASSERT_EQ(terminal.exit_code, 0) << describe(terminal);
  EXPECT_GE(count_redraws(terminal.out), 4) << "two epochs, each drawn at its first step and its end\n"
                                            << describe(terminal);
  EXPECT_EQ(count_of(terminal.out, "Epoch "), 2) << describe(terminal);
  EXPECT_EQ(shardfit::read_history_pb(dir_ / "h1" / "history.pb").params().verbose(), 1);

  // 2. The same process writing to a pipe (a log): one line per epoch, no carriage return at all.
  const Launch log = shardfit::testing::launch_process(with(fit, {"--history", (dir_ / "h2").string()}), kKillSeconds);
  ASSERT_EQ(log.exit_code, 0) << describe(log);
  EXPECT_EQ(count_of(log.out, "\r"), 0) << describe(log);
  EXPECT_EQ(count_of(log.out, "45/45 "), 2) << describe(log);
  EXPECT_EQ(shardfit::read_history_pb(dir_ / "h2" / "history.pb").params().verbose(), 2);

  // 3. mpirun at a terminal: Open MPI gives rank 0 a pseudo-terminal whatever mpirun's own output is, so the
  //    default stays one line per epoch ...
  std::vector<std::string> mpirun = mpirun_command(2, dir_, {"fit", (dir_ / "mlp.pbtxt").string(), "--epochs", "2"});
  const Launch launched = shardfit::testing::launch_process(
      {"/usr/bin/script", "-qfec", shell_words(with(mpirun, {"--history", (dir_ / "h3").string()})), "/dev/null"},
      kKillSeconds);
  ASSERT_EQ(launched.exit_code, 0) << describe(launched);
  EXPECT_EQ(count_redraws(launched.out), 0) << describe(launched);
  EXPECT_EQ(count_of(launched.out, "45/45 "), 2) << describe(launched);

  // 4. ... and --verbose 1 asks for the bar.
  const Launch asked = shardfit::testing::launch_process(
      with(mpirun, {"--history", (dir_ / "h4").string(), "--verbose", "1"}), kKillSeconds);
  ASSERT_EQ(asked.exit_code, 0) << describe(asked);
  EXPECT_GE(count_redraws(asked.out), 4) << describe(asked);
}

TEST_F(CliTest, FlagsOverrideTheJobFile) {
  // The job file says epochs 30, batch 32, validation_split 0.2 and history_dir out/digits.
  write_text(dir_ / "mlp.pbtxt", digits_job());
  const fs::path history_dir = dir_ / "flags";
  const Launch launch =
      run(2,
          {"fit", (dir_ / "mlp.pbtxt").string(), "--batch-size", "64", "--validation-split", "0.1", "--epochs", "2",
           "--history", history_dir.string(), "--verbose=0", "--overlap", "on", "--bucket-bytes", "65536"},
          Watch::kPlain);
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);

  const shardfit::proto::History history = expect_complete_history(history_dir, 2);
  EXPECT_EQ(history.params().epochs(), 2);
  EXPECT_EQ(history.params().global_batch(), 64);
  EXPECT_EQ(history.params().train_samples(), 1617);  // floor(1797 * 0.9)
  EXPECT_EQ(history.params().validation_samples(), 180);
  EXPECT_EQ(history.params().steps(), 26);  // ceil(1617 / 64)
  EXPECT_EQ(history.params().verbose(), 0);
  EXPECT_TRUE(history.params().overlap()) << "run.json records the run's --overlap";
  EXPECT_EQ(history.params().bucket_bytes(), 65536);
  EXPECT_EQ(launch.out, "") << "--verbose=0 is silent";
  EXPECT_FALSE(fs::exists(dir_ / "out")) << "--history replaces outputs.history_dir";
}

TEST_F(CliTest, CallbacksFromFlags) {
  // --callback takes one callback in job-file syntax; --early-stopping N is EarlyStopping(patience N).
  write_text(dir_ / "mlp.pbtxt", digits_job());
  const fs::path history_dir = dir_ / "callbacks";
  const fs::path log = dir_ / "cb.csv";
  const Launch launch = run(2,
                            {"fit", (dir_ / "mlp.pbtxt").string(), "--epochs", "3", "--history", history_dir.string(),
                             "--callback", "csv_logger { filename: \"" + log.string() + "\" }", "--callback",
                             "learning_rate_scheduler { exponential { rate: 0.5 } }", "--early-stopping", "100"},
                            Watch::kPlain);
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  const shardfit::proto::History history = shardfit::read_history_pb(history_dir / "history.pb");
  ASSERT_EQ(history.epochs_size(), 3);
  // The scheduler halves the job's 0.001 each epoch and logs the rate.
  for (int e = 0; e < 3; ++e) {
    EXPECT_FLOAT_EQ(history.epochs(e).values().at("learning_rate"), 0.001F / static_cast<float>(1 << e));
  }
  std::ifstream in(log);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) ++lines;
  EXPECT_EQ(lines, 4) << "CSVLogger: a header and one row per epoch";

  const Launch bad = run(2, {"fit", (dir_ / "mlp.pbtxt").string(), "--callback", "early_stop { }"}, Watch::kPlain);
  EXPECT_NE(bad.exit_code, 0) << describe(bad);
  EXPECT_EQ(count_of(bad.err + bad.out, "error on rank"), 1) << describe(bad);
  EXPECT_NE((bad.err + bad.out).find("--callback:1:"), std::string::npos) << describe(bad);
}

TEST_F(CliTest, ReportRanksPrintsOneLinePerRankInOrder) {
  write_text(dir_ / "mlp.pbtxt", digits_job());
  const Launch launch = run(3,
                            {"fit", (dir_ / "mlp.pbtxt").string(), "--epochs", "1", "--history",
                             (dir_ / "report").string(), "--report-ranks"},
                            Watch::kPlain);
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  // 1437 training rows, batch 32, 3 ranks: slices of 10-11 (ranks 0 and 1) and 9-10 (rank 2); 360 / 3 validation rows.
  const size_t first = launch.out.find("[rank 0/3]");
  const size_t second = launch.out.find("[rank 1/3]");
  const size_t third = launch.out.find("[rank 2/3]");
  ASSERT_NE(first, std::string::npos) << describe(launch);
  EXPECT_LT(first, second) << describe(launch);
  EXPECT_LT(second, third) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "[rank "), 3) << describe(launch);
  EXPECT_NE(launch.out.find("9-10 samples per step, 120 validation rows"), std::string::npos) << describe(launch);
}

// Ranks that share cores are named at start. OMP_PROC_BIND without a binding from mpirun pins both ranks' only
// thread to the first core (2 threads, 1 CPU): one warning. Each rank bound to its own core: none.
TEST_F(CliTest, RanksSharingOneCoreAreWarnedAbout) {
  write_text(dir_ / "mlp.pbtxt", digits_job());
  const auto launch_with = [&](const std::vector<std::string>& placement) {
    std::vector<std::string> command =
        mpirun_command(2, dir_,
                       {"fit", "mlp.pbtxt", "--epochs", "1", "--verbose", "0", "--report-ranks",
                        "--overwrite"});  // two fresh runs in one folder
    command.insert(command.begin() + 1, placement.begin(), placement.end());
    return shardfit::testing::launch_process(command, kKillSeconds);
  };
  const Launch shared = launch_with({"--bind-to", "none", "-x", "OMP_PROC_BIND=close", "-x", "OMP_PLACES=cores"});
  ASSERT_EQ(shared.exit_code, 0) << describe(shared);
  EXPECT_EQ(count_of(shared.err, "shardfit: warning: on host "), 1) << describe(shared);
  EXPECT_EQ(count_of(shared.err, "ranks 0-1 run 2 OpenMP threads on 1 CPU (0)"), 1) << describe(shared);
  EXPECT_EQ(count_of(shared.out, "1 OpenMP thread(s) on cpus 0, "), 2) << describe(shared);

  const Launch bound = launch_with(
      {"--map-by", "slot:PE=1", "--bind-to", "core", "-x", "OMP_PROC_BIND=close", "-x", "OMP_PLACES=cores"});
  ASSERT_EQ(bound.exit_code, 0) << describe(bound);
  EXPECT_EQ(count_of(bound.err, "warning"), 0) << describe(bound);
  EXPECT_EQ(count_of(bound.out, "1 OpenMP thread(s) on cpus 0, "), 1) << describe(bound);
  EXPECT_EQ(count_of(bound.out, "1 OpenMP thread(s) on cpus 1, "), 1) << describe(bound);
}

// mixed_bfloat16 on a CPU without AVX512_BF16 or AMX trains in float32 and says so once, at start: oneDNN's
// ONEDNN_MAX_CPU_ISA=AVX512_CORE caps the ISA it dispatches (and cpu_has_bf16 reads) whatever this CPU has. With
// --epochs 0 no epoch runs, so the line cannot come from an epoch's end; at 2 ranks it is printed once (rank 0).
TEST_F(CliTest, Bf16OnACpuWithoutItWarnsOnceAtStart) {
  write_text(dir_ / "mlp.pbtxt", digits_job());
  const auto launch_with = [&](const std::vector<std::string>& environment, const char* epochs) {
    std::vector<std::string> command = mpirun_command(
        2, dir_, {"fit", "mlp.pbtxt", "--epochs", epochs, "--dtype-policy", "mixed_bfloat16", "--overwrite"});
    command.insert(command.begin() + 1, environment.begin(), environment.end());
    return shardfit::testing::launch_process(command, kKillSeconds);
  };
  const std::string warning = "shardfit: warning: dtype policy mixed_bfloat16 asked for, but this CPU has neither";
  for (const char* epochs : {"0", "2"}) {
    const Launch capped = launch_with({"-x", "ONEDNN_MAX_CPU_ISA=AVX512_CORE"}, epochs);
    ASSERT_EQ(capped.exit_code, 0) << describe(capped);
    EXPECT_EQ(count_of(capped.err, warning), 1) << describe(capped);
    EXPECT_EQ(count_of(capped.err,
                       "(oneDNN dispatches avx512_core), where bf16 matmuls run slower than f32: "
                       "training in float32\n"),
              1)
        << describe(capped);
    EXPECT_EQ(count_of(capped.out, "warning"), 0) << "not among the epoch lines\n" << describe(capped);
  }
  // The history says what the run trained in: the fallback's float32, not the policy asked for.
  EXPECT_EQ(shardfit::read_history_pb(dir_ / "out" / "digits" / "history.pb").params().dtype_policy(), "float32");
  // Where oneDNN dispatches bf16 instructions, no warning.
  if (shardfit::cpu_has_bf16()) {
    const Launch plain = launch_with({}, "0");
    ASSERT_EQ(plain.exit_code, 0) << describe(plain);
    EXPECT_EQ(count_of(plain.err, "warning"), 0) << describe(plain);
  }
}

TEST_F(CliTest, HelpPrintsEveryFlagOnce) {
  const Launch launch = run(2, {"--help"}, Watch::kPlain);
  EXPECT_EQ(launch.exit_code, 0) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "usage: shardfit fit JOB.pbtxt"), 1) << "rank 0 only\n" << describe(launch);
  // Each fit flag is described once, in the "flags for fit" block (evaluate / predict reuse --batch-size).
  const std::string fit_flags = launch.out.substr(launch.out.find("flags for fit"));
  for (const char* flag : {"--epochs N", "--batch-size N", "--validation-split F", "--learning-rate F",
                           "--shuffle true|false", "--seed N", "--history DIR", "--verbose 0|1|2", "--resume  ",
                           "--overwrite  ", "--early-stopping N", "--callback TEXT", "--report-ranks"}) {
    EXPECT_EQ(count_of(fit_flags, flag), 1) << flag << "\n" << describe(launch);
  }
  EXPECT_EQ(launch.err, "") << describe(launch);
}

// --- failures: every rank exits non-zero within seconds, one message naming the problem ---------------------------

class CliFailureTest : public CliTest, public ::testing::WithParamInterface<int> {};

TEST_P(CliFailureTest, MissingDataFile) {
  const int ranks = GetParam();
  write_small_data(dir_);
  write_text(dir_ / "job.pbtxt", replaced(kSmallJob, "\"x.npy\"", "\"absent_x.npy\""));
  const Launch launch = run(ranks, {"fit", "job.pbtxt"}, Watch::kEachRankReports);
  const std::string message = expect_failure_on_every_rank(launch, ranks, "missing data file");
  EXPECT_NE(message.find("absent_x.npy"), std::string::npos) << message;
  EXPECT_NE(message.find((dir_ / "absent_x.npy").string()), std::string::npos) << "the resolved path\n" << message;
}

TEST_P(CliFailureTest, MalformedJobFile) {
  const int ranks = GetParam();
  write_small_data(dir_);
  const std::string bad_line = "  layers { dense { units: sixteen } }";
  write_text(dir_ / "job.pbtxt",
             replaced(kSmallJob, "  layers { dense { units: 16 activation: \"relu\" } }", bad_line));
  const Launch launch = run(ranks, {"fit", "job.pbtxt"}, Watch::kEachRankReports);
  const std::string message = expect_failure_on_every_rank(launch, ranks, "malformed job file");
  // FILE:LINE:COLUMN pointing at the bad token (line 2, 1-based column of "sixteen").
  const std::string where = "job.pbtxt:2:" + std::to_string(bad_line.find("sixteen") + 1) + ": ";
  EXPECT_NE(message.find(where), std::string::npos) << "expected " << where << "\n" << message;
  EXPECT_NE(message.find("sixteen"), std::string::npos) << message;
}

TEST_P(CliFailureTest, ClassIdOutOfRangeInTheLastRow) {
  // Each rank checks the class ids of its share of the rows before the first step; the bad id is in the last row,
  // so the last rank finds it and every rank stops with its message.
  const int ranks = GetParam();
  write_small_data(dir_);
  std::vector<int64_t> y(kSmallRows);
  for (int64_t i = 0; i < kSmallRows; ++i) y[i] = i % 10;
  y.back() = 12;
  shardfit::write_npy(dir_ / "y.npy", y, {kSmallRows});
  write_text(dir_ / "job.pbtxt", kSmallJob);
  const Launch launch = run(ranks, {"fit", "job.pbtxt"}, Watch::kEachRankReports);
  const std::string message = expect_failure_on_every_rank(launch, ranks, "class id out of range");
  EXPECT_NE(message.find("error on rank " + std::to_string(ranks - 1)), std::string::npos) << message;
  EXPECT_NE(message.find("12"), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(Ranks, CliFailureTest, ::testing::Values(2, 4));

TEST_F(CliTest, InputDimDisagreesWithTheData) {
  write_small_data(dir_);
  write_text(dir_ / "job.pbtxt", replaced(kSmallJob, "model {\n", "model {\n  input_dim: 10\n"));
  const Launch launch = run(2, {"fit", "job.pbtxt"}, Watch::kEachRankReports);
  const std::string message = expect_failure_on_every_rank(launch, 2, "input_dim vs features");
  EXPECT_TRUE(mentions(message, "input_dim")) << message;
  EXPECT_TRUE(mentions(message, "10")) << message;
  EXPECT_TRUE(mentions(message, "64")) << message;
}

TEST_F(CliTest, LabelWidthDisagreesWithTheOutputs) {
  write_small_data(dir_);
  std::vector<float> y(kSmallRows * 3, 0.0F);
  for (int64_t i = 0; i < kSmallRows; ++i) y[i * 3 + i % 3] = 1.0F;
  shardfit::write_npy(dir_ / "y3.npy", y, {kSmallRows, 3});
  write_text(dir_ / "job.pbtxt", replaced(kSmallJob, "\"y.npy\"", "\"y3.npy\""));
  const Launch launch = run(2, {"fit", "job.pbtxt"}, Watch::kEachRankReports);
  const std::string message = expect_failure_on_every_rank(launch, 2, "label width vs outputs");
  EXPECT_TRUE(mentions(message, "3")) << message;
  EXPECT_TRUE(mentions(message, "10")) << message;
  EXPECT_NE(message.find("data.train.y"), std::string::npos) << message;
}

TEST_F(CliTest, FileReadableOnRankZeroOnly) {
  // Per-rank working directories (Open MPI's MPMD syntax): rank 0 sees the data, rank 1 sees the job file alone.
  const fs::path with_data = dir_ / "a";
  const fs::path without_data = dir_ / "b";
  fs::create_directories(with_data);
  fs::create_directories(without_data);
  write_small_data(with_data);
  write_text(with_data / "job.pbtxt", kSmallJob);
  write_text(without_data / "job.pbtxt", kSmallJob);
  const Launch launch =
      run_mpi({{1, with_data, {"fit", "job.pbtxt"}}, {1, without_data, {"fit", "job.pbtxt"}}}, Watch::kEachRankReports);
  const std::string message = expect_failure_on_every_rank(launch, 2, "data on rank 0 only");
  EXPECT_EQ(message.rfind("error on rank 1 (", 0), 0u) << message;
  EXPECT_NE(message.find((without_data / "x.npy").string()), std::string::npos) << message;
}

TEST_F(CliTest, UsageErrorsPointToHelp) {
  write_small_data(dir_);
  write_text(dir_ / "job.pbtxt", kSmallJob);
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"fit", "job.pbtxt", "--epoch", "3"}, "--epoch"},
      {{"fit", "job.pbtxt", "--batch-size", "zero"}, "zero"},
      {{"fit", "--epochs", "3"}, "job file"},
      {{"fit", "job.pbtxt", "--bucket-bytes", "6"}, "multiple of 4"},
      {{"fit", "job.pbtxt", "--bucket-bytes", "0"}, "integer >= 4"},
      {{"fit", "job.pbtxt", "--bucket-bytes", "4M"}, "4M"},
      {{"bench", "--model", "mlp", "--bucket-bytes", "-8"}, "-8"},
  };
  for (const auto& [args, named] : cases) {
    SCOPED_TRACE(args[args.size() - 2] + " " + args.back());
    const Launch launch = run(2, args, Watch::kEachRankReports);
    const std::string message = expect_failure_on_every_rank(launch, 2, "usage: " + named);
    EXPECT_NE(message.find(named), std::string::npos) << message;
    EXPECT_NE(message.find("--help"), std::string::npos) << message;
    EXPECT_FALSE(fs::exists(dir_ / "history")) << "nothing ran";
  }
}

TEST_F(CliTest, BadConfigValuesNameTheField) {
  write_small_data(dir_);
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {replaced(kSmallJob, "batch_size: 8", "batch_size: 0"), {"fit.batch_size", "0"}},
      {replaced(kSmallJob, "\"relu\"", "\"relux\""), {"activation", "relux"}},
      {replaced(kSmallJob, "verbose: 0", "verbose: 0 bucket_bytes: 10"), {"fit.bucket_bytes", "10", "multiple of 4"}},
  };
  for (const auto& [job, named] : cases) {
    SCOPED_TRACE(named.front());
    write_text(dir_ / "job.pbtxt", job);
    const Launch launch = run(2, {"fit", "job.pbtxt"}, Watch::kEachRankReports);
    const std::string message = expect_failure_on_every_rank(launch, 2, "config: " + named.front());
    for (const std::string& word : named) EXPECT_TRUE(mentions(message, word)) << word << "\n" << message;
  }
}

TEST_F(CliTest, HintIsPrintedOnceOnItsOwnLine) {
  // The error path adds "hint: " before an Error's hint; a hint written with its own "hint: " printed it twice.
  write_small_data(dir_);
  write_text(dir_ / "job.pbtxt", kSmallJob);
  write_text(dir_ / "history", "a regular file where the history folder should be\n");
  const Launch launch = run(2, {"fit", "job.pbtxt"}, Watch::kEachRankReports);
  const std::string message = expect_failure_on_every_rank(launch, 2, "history folder is a file");
  EXPECT_NE(message.find("history"), std::string::npos) << message;
  EXPECT_NE(message.find("\nhint: "), std::string::npos) << "the message carries a hint\n" << message;
  EXPECT_EQ(count_of(launch.out + launch.err, "hint:"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.out + launch.err, "hint: hint"), 0) << describe(launch);
}

TEST_F(CliTest, PlainMpirunExitsNonZero) {
  // What a user sees without the reporting shells: mpirun's own exit status, and still one message.
  write_small_data(dir_);
  write_text(dir_ / "job.pbtxt", replaced(kSmallJob, "\"x.npy\"", "\"absent_x.npy\""));
  const Launch launch = run(2, {"fit", "job.pbtxt"}, Watch::kPlain);
  EXPECT_FALSE(launch.timed_out) << describe(launch);
  EXPECT_NE(launch.exit_code, 0) << describe(launch);
  EXPECT_LT(launch.seconds, kLimitSeconds) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "error on rank"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.err, "cannot open data file 'absent_x.npy'"), 1) << describe(launch);
  std::printf("[cli] %-28s 2 ranks: mpirun exited %d after %.3f s\n", "plain mpirun, missing data", launch.exit_code,
              launch.seconds);
}

TEST_F(CliTest, FailedRunKeepsTheHistoryAlreadyWritten) {
  write_text(dir_ / "mlp.pbtxt", digits_job());
  const fs::path history_dir = dir_ / "history";
  const Launch first =
      run(2, {"fit", (dir_ / "mlp.pbtxt").string(), "--epochs", "2", "--history", history_dir.string()}, Watch::kPlain);
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  std::map<std::string, std::string> before;
  for (const auto& entry : fs::directory_iterator(history_dir)) {
    before[entry.path().filename().string()] = read_bytes(entry.path());
  }

  write_text(dir_ / "broken.pbtxt", replaced(digits_job(), (digits_dir() / "x.npy").string(), "absent_x.npy"));
  const Launch failed =
      run(2, {"fit", "broken.pbtxt", "--epochs", "2", "--history", history_dir.string()}, Watch::kEachRankReports);
  expect_failure_on_every_rank(failed, 2, "missing data, old history");

  std::map<std::string, std::string> after;
  for (const auto& entry : fs::directory_iterator(history_dir)) {
    after[entry.path().filename().string()] = read_bytes(entry.path());
  }
  EXPECT_EQ(after.size(), before.size()) << "no file added or removed";
  EXPECT_TRUE(after == before) << "the old history files are byte for byte what the first run wrote";
  expect_complete_history(history_dir, 2);
}

}  // namespace
