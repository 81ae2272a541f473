// Unit tests of dist/output_plan: the path rule and each check of check_outputs, on real files in a temporary
// folder (no MPI, no training). The end-to-end cases are in tests/launch/test_outputs.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include "dist/io/paths.h"
#include "dist/train/output_plan.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "tests/support/temp_dir.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

void touch(const fs::path& path, const std::string& text = "data") {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

class OutputPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    touch(dir() / "x.npy");
    touch(dir() / "y.npy");
  }
  const fs::path& dir() const { return tmp_.path(); }

  // The job (data x.npy / y.npy plus `extra`) resolved against dir(), as fit sees it; the message of the Error
  // check_outputs throws, or "" when it accepts the plan.
  std::string check(const std::string& extra, void (*adjust)(FitConfig&) = nullptr) {
    return check_error(extra, adjust).what;
  }

  struct Refusal {
    std::string what;  // "" when the plan is accepted
    std::string hint;
  };
  Refusal check_error(const std::string& extra, void (*adjust)(FitConfig&) = nullptr) {
    proto::Job job = parse_job_text(
        R"(model { layers { dense { units: 2 } } } loss: "mse" data { train { x { path: "x.npy" } y { path: "y.npy" } } } )" +
            extra,
        "job.pbtxt");
    FitConfig config = resolve_fit_config(job, false);
    config.job_file = dir() / "job.pbtxt";
    if (adjust != nullptr) adjust(config);
    resolve_job_paths(dir(), config, job);
    try {
      check_outputs(config, job, dir());
    } catch (const Error& e) {
      return {e.what(), e.hint()};
    }
    return {};
  }

 private:
  TempDir tmp_{"output_plan"};
};

TEST(JobPaths, RelativePathsResolveAgainstTheJobFolderAndAbsoluteOnesStay) {
  EXPECT_EQ(resolve_path("/jobs/a", "out/h"), fs::path("/jobs/a/out/h"));
  EXPECT_EQ(resolve_path("/jobs/a", "../data/x.npy"), fs::path("/jobs/data/x.npy"));
  EXPECT_EQ(resolve_path("/jobs/a", "/abs/w.npz"), fs::path("/abs/w.npz"));
  EXPECT_EQ(resolve_path("/jobs/a", ""), fs::path());

  proto::Job job = parse_job_text(
      R"(outputs { history_dir: "h" initial_weights: "init.npz" }
         callbacks { model_checkpoint { filepath: "ck/w.{epoch:02d}.npz" } }
         callbacks { csv_logger { filename: "/logs/l.csv" } })",
      "job.pbtxt");
  FitConfig config = resolve_fit_config(job, false);
  resolve_job_paths("/jobs/a", config, job);
  EXPECT_EQ(config.history_dir, fs::path("/jobs/a/h"));
  EXPECT_EQ(config.checkpoint_dir, fs::path("/jobs/a/h/checkpoints"));
  EXPECT_EQ(config.export_weights, fs::path("/jobs/a/h/weights.npz")) << "the default weights file";
  EXPECT_EQ(config.initial_weights, fs::path("/jobs/a/init.npz"));
  EXPECT_EQ(job.callbacks(0).model_checkpoint().filepath(), "/jobs/a/ck/w.{epoch:02d}.npz");
  EXPECT_EQ(job.callbacks(1).csv_logger().filename(), "/logs/l.csv");
}

TEST(JobPaths, AnEmptyExportWeightsAsksForNone) {
  const proto::Job job = parse_job_text(R"(outputs { export_weights: "" })", "job.pbtxt");
  EXPECT_TRUE(resolve_fit_config(job, false).export_weights.empty());
}

TEST_F(OutputPlanTest, AcceptsAnOrdinaryJobAndCreatesNothing) {
  EXPECT_EQ(check(R"(outputs { history_dir: "out/deep" }
                     callbacks { model_checkpoint { filepath: "ck/w.{epoch:02d}.npz" } }
                     callbacks { csv_logger { filename: "log.csv" } })"),
            "");
  EXPECT_FALSE(fs::exists(dir() / "out"));
  EXPECT_FALSE(fs::exists(dir() / "ck"));
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir())) ++entries;
  EXPECT_EQ(entries, 2) << "only x.npy and y.npy: the probe file is gone";
}

TEST_F(OutputPlanTest, OutputsOverInputsAreRefused) {
  const std::string export_x = check(R"(outputs { export_weights: "x.npy" })");
  EXPECT_NE(export_x.find("outputs.export_weights"), std::string::npos) << export_x;
  EXPECT_NE(export_x.find("data.train.x.path"), std::string::npos) << export_x;

  const std::string checkpoint_y = check(R"(callbacks { model_checkpoint { filepath: "./sub/../y.npy" } })");
  EXPECT_NE(checkpoint_y.find("callbacks[0].model_checkpoint.filepath"), std::string::npos) << checkpoint_y;
  EXPECT_NE(checkpoint_y.find("data.train.y.path"), std::string::npos) << checkpoint_y;

  const std::string csv_x = check(R"(callbacks { csv_logger { filename: "x.npy" } })");
  EXPECT_NE(csv_x.find("callbacks[0].csv_logger.filename"), std::string::npos) << csv_x;

  const std::string job_file = check(R"(callbacks { csv_logger { filename: "job.pbtxt" } })");
  EXPECT_NE(job_file.find("the job file"), std::string::npos) << job_file;

  touch(dir() / "init.npz");
  const std::string initial = check(R"(outputs { initial_weights: "init.npz" export_weights: "init.npz" })");
  EXPECT_NE(initial.find("outputs.initial_weights"), std::string::npos) << initial;

  // A pattern that some epoch would turn into the input's name.
  touch(dir() / "ck" / "w.05.npz");
  const std::string pattern = check(R"(outputs { initial_weights: "ck/w.05.npz" }
                                       callbacks { model_checkpoint { filepath: "ck/w.{epoch:02d}.npz" } })");
  EXPECT_NE(pattern.find("can name the input outputs.initial_weights"), std::string::npos) << pattern;
}

TEST_F(OutputPlanTest, AHardLinkToTheDataIsStillTheData) {
  fs::create_hard_link(dir() / "x.npy", dir() / "alias.npy");
  const std::string message = check(R"(outputs { export_weights: "alias.npy" })");
  EXPECT_NE(message.find("data.train.x.path"), std::string::npos) << message;
}

TEST_F(OutputPlanTest, TwoOutputsOnOneFileAreRefused) {
  const std::string history = check(R"(callbacks { csv_logger { filename: "history.csv" } })");
  EXPECT_NE(history.find("outputs.history_dir's history.csv"), std::string::npos) << history;
  const std::string weights = check(R"(outputs { export_weights: "w.npz" }
                                       callbacks { model_checkpoint { filepath: "w.npz" } })");
  EXPECT_NE(weights.find("two outputs would overwrite each other"), std::string::npos) << weights;
}

TEST_F(OutputPlanTest, FoldersUnderARegularFileAndFilesThatAreFoldersAreRefused) {
  touch(dir() / "plain");
  for (const char* extra : {R"(outputs { history_dir: "plain/h" })", R"(outputs { checkpoint_dir: "plain/c/d" })",
                            R"(outputs { export_weights: "plain/w.npz" })", R"(outputs { history_dir: "plain" })"}) {
    const std::string message = check(extra);
    EXPECT_NE(message.find(shardfit::cat("'", (dir() / "plain").string(), "' is a file")), std::string::npos)
        << message;
  }
  fs::create_directories(dir() / "folder.npz");
  const std::string folder = check(R"(outputs { export_weights: "folder.npz" })");
  EXPECT_NE(folder.find("is a folder: expected a file path"), std::string::npos) << folder;
}

TEST_F(OutputPlanTest, AFileWhereAnotherOutputNeedsAFolderIsRefused) {
  // Neither exists yet: without this check the whole fit trains, then the weights cannot be renamed onto the
  // history folder.
  const std::string same = check(R"(outputs { history_dir: "h7" export_weights: "h7" })");
  EXPECT_NE(same.find(shardfit::cat("outputs.export_weights '", (dir() / "h7").string(),
                                    "' is also the folder outputs.history_dir")),
            std::string::npos)
      << same;
  // The file is a folder above another output's folder.
  const std::string above = check(R"(outputs { checkpoint_dir: "out/ck" }
                                     callbacks { csv_logger { filename: "out" } })");
  EXPECT_NE(above.find("callbacks[0].csv_logger.filename"), std::string::npos) << above;
  EXPECT_NE(above.find("would have to be a folder for outputs.checkpoint_dir"), std::string::npos) << above;
  const std::string checkpoint = check(R"(outputs { checkpoint_dir: "ck/run1" export_weights: "ck" })");
  EXPECT_NE(checkpoint.find("outputs.export_weights"), std::string::npos) << checkpoint;
  EXPECT_NE(checkpoint.find("outputs.checkpoint_dir"), std::string::npos) << checkpoint;
  const std::string patterned = check(R"(outputs { export_weights: "ck" }
                                         callbacks { model_checkpoint { filepath: "ck/w.{epoch:02d}.npz" } })");
  EXPECT_NE(patterned.find("callbacks[0].model_checkpoint.filepath's folder"), std::string::npos) << patterned;
  // A name that merely starts like the folder is another path.
  EXPECT_EQ(check(R"(outputs { history_dir: "h7" export_weights: "h7x" })"), "");
  EXPECT_FALSE(fs::exists(dir() / "h7"));
}

TEST_F(OutputPlanTest, EachUnwritableFolderHintSaysWhenThatOutputIsWritten) {
  // /proc takes no new files, whoever runs the test (root included).
  const std::string unwritable = "/proc/shardfit-output-plan-test";
  const struct {
    std::string extra;
    std::string field;
    std::string when;
  } cases[] = {
      {cat(R"(outputs { history_dir: ")", unwritable, R"(" export_weights: "w.npz" })"), "outputs.history_dir",
       "after every epoch"},
      {cat(R"(outputs { checkpoint_dir: ")", unwritable, R"(" })"), "outputs.checkpoint_dir",
       "when a stop signal arrives"},
      {cat(R"(outputs { export_weights: ")", unwritable, R"(/w.npz" })"), "outputs.export_weights's folder",
       "once, after the last epoch"},
      {cat(R"(callbacks { model_checkpoint { filepath: ")", unwritable, R"(/w.npz" } })"),
       "callbacks[0].model_checkpoint.filepath's folder", "at the end of an epoch"},
      {cat(R"(callbacks { csv_logger { filename: ")", unwritable, R"(/log.csv" } })"),
       "callbacks[0].csv_logger.filename's folder", "after every epoch"},
  };
  for (const auto& c : cases) {
    const Refusal refusal = check_error(c.extra);
    EXPECT_NE(refusal.what.find(c.field + " '" + unwritable), std::string::npos) << c.extra << "\n" << refusal.what;
    EXPECT_NE(refusal.hint.find(c.when), std::string::npos) << c.extra << "\n" << refusal.hint;
  }
  const Refusal weights = check_error(cat(R"(outputs { export_weights: ")", unwritable, R"(/w.npz" })"));
  EXPECT_EQ(weights.hint.find("every epoch"), std::string::npos) << "export_weights is written once\n" << weights.hint;
}

TEST_F(OutputPlanTest, HistoryFilesAreNotCheckedWhenNotWritten) {
  touch(dir() / "plain");
  EXPECT_EQ(check(R"(outputs { history_dir: "plain/h" checkpoint_dir: "c" export_weights: "" })",
                  [](FitConfig& c) { c.write_history = false; }),
            "");
}

TEST_F(OutputPlanTest, AnEarlierCheckpointNeedsResumeOrOverwrite) {
  touch(dir() / "out" / "checkpoints" / "checkpoint.pb");
  const std::string message = check(R"(outputs { history_dir: "out" })");
  EXPECT_NE(message.find("outputs.checkpoint_dir"), std::string::npos) << message;
  EXPECT_EQ(check(R"(outputs { history_dir: "out" })", [](FitConfig& c) { c.resume = true; }), "");
  EXPECT_EQ(check(R"(outputs { history_dir: "out" })", [](FitConfig& c) { c.overwrite = true; }), "");
  EXPECT_EQ(check(R"(outputs { history_dir: "out" checkpoint_every_epochs: 0 })"), "")
      << "a run without periodic checkpoints (a benchmark) leaves the checkpoint alone";
}

TEST_F(OutputPlanTest, TheDefaultWeightsFileIsNamedAsADefault) {
  touch(dir() / "weights.npz");
  const std::string message = check(R"(outputs { initial_weights: "weights.npz" })");
  EXPECT_NE(message.find("the final weights file (outputs.export_weights, default <history_dir>/weights.npz)"),
            std::string::npos)
      << message;
  EXPECT_EQ(check(R"(outputs { initial_weights: "weights.npz" export_weights: "tuned.npz" })"), "");
}

// job_files: what evaluate / predict --output must never replace, each path resolved against the job file's folder
// and named as the job names it. Fit options out of range do not hide the files (they are not fit's to check here).
TEST(JobFilesTest, NamesEveryFileTheJobNamesOrItsFitWrites) {
  const proto::Job job = parse_job_text(
      R"(model { layers { dense { units: 2 } } } loss: "mse" fit { epochs: -3 }
         data { train { x { path: "x.npy" } y { path: "y.npy" } } validation { x { path: "/v/vx.npy" } }
                test { x { path: "t/tx.npy" } } }
         outputs { history_dir: "h" checkpoint_dir: "/ck" initial_weights: "init.npz" checkpoint_every_epochs: -1 }
         callbacks { csv_logger { filename: "log.csv" } }
         callbacks { model_checkpoint { filepath: "best.npz" } }
         callbacks { model_checkpoint { filepath: "w{epoch:02d}.npz" } })",
      "jobs/job.pbtxt");
  std::map<std::string, fs::path> files;
  for (const InputFile& file : job_files(job, "/jobs")) {
    EXPECT_TRUE(files.emplace(file.name, file.path).second) << "named twice: " << file.name;
  }
  const std::map<std::string, fs::path> expected = {
      {"the job's data.train.x.path", "/jobs/x.npy"},
      {"the job's data.train.y.path", "/jobs/y.npy"},
      {"the job's data.validation.x.path", "/v/vx.npy"},
      {"the job's data.test.x.path", "/jobs/t/tx.npy"},
      {"the job's outputs.initial_weights", "/jobs/init.npz"},
      {"the job's history file history.json (outputs.history_dir)", "/jobs/h/history.json"},
      {"the job's history file run.json (outputs.history_dir)", "/jobs/h/run.json"},
      {"the job's history file history.pb (outputs.history_dir)", "/jobs/h/history.pb"},
      {"the job's history file history.csv (outputs.history_dir)", "/jobs/h/history.csv"},
      {"the job's history file loss.svg (outputs.history_dir)", "/jobs/h/loss.svg"},
      {"the job's checkpoint checkpoint.pb (outputs.checkpoint_dir)", "/ck/checkpoint.pb"},
      {"the job's final weights file (outputs.export_weights, default <history_dir>/weights.npz)",
       "/jobs/h/weights.npz"},
      {"the job's CSVLogger file (callbacks[0].csv_logger.filename)", "/jobs/log.csv"},
      {"the job's ModelCheckpoint file (callbacks[1].model_checkpoint.filepath)", "/jobs/best.npz"},
  };
  EXPECT_EQ(files, expected);
}

}  // namespace
}  // namespace shardfit
