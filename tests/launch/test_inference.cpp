// End-to-end tests of what comes after fit, run from outside MPI like test_cli: evaluate / predict with exported
// weights (across rank counts, against NumPy and against fit's own validation), plot, the verdict on real runs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "dist/io/dataset.h"
#include "dist/io/history_writer.h"
#include "dist/io/npy_writer.h"
#include "tests/support/cli_fixture.h"
#include "tests/support/launch_process.h"

namespace {

namespace fs = std::filesystem;
using shardfit::testing::count_of;
using shardfit::testing::describe;
using shardfit::testing::digits_dir;
using shardfit::testing::error_message;
using shardfit::testing::expect_failure_on_every_rank;
using shardfit::testing::FreshDirTest;
using shardfit::testing::Launch;
using shardfit::testing::make_temp_dir;
using shardfit::testing::mpirun_command;
using shardfit::testing::quoted;
using shardfit::testing::read_bytes;
using shardfit::testing::replaced;
using shardfit::testing::Watch;
using shardfit::testing::write_text;

constexpr double kKillSeconds = 60.0;  // no launch is waited for longer than this
constexpr int64_t kDigitsRows = 1797;
constexpr int64_t kDigitsFeatures = 64;
constexpr int64_t kTrainRows = 1437;  // floor(1797 * 0.8): validation_split 0.2 holds out the last 360 rows

// `shardfit args...` on `ranks` ranks working in wdir. With each_rank_reports, every rank is wrapped in a shell that
// prints "[rank R exit S]" and Open MPI lets each rank end by itself, so a failure must be agreed by all of them.
Launch shardfit(int ranks, const fs::path& wdir, const std::vector<std::string>& args, bool each_rank_reports = false) {
  return shardfit::testing::launch_process(
      mpirun_command(ranks, wdir, args, each_rank_reports ? Watch::kEachRankReports : Watch::kPlain), kKillSeconds);
}

// Python reads what a user's script would read: np.load and xml.etree, not this project's own readers.
Launch python(const std::string& script, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/python3", "-c", script};
  argv.insert(argv.end(), args.begin(), args.end());
  return shardfit::testing::launch_process(argv, kKillSeconds);
}

// The bundled digits job with absolute data paths and the given outputs block.
std::string digits_job(const std::string& outputs) {
  std::string text = read_bytes(digits_dir() / "mlp.pbtxt");
  EXPECT_FALSE(text.empty()) << digits_dir() / "mlp.pbtxt";
  text = replaced(text, "\"x.npy\"", quoted(digits_dir() / "x.npy"));
  text = replaced(text, "\"y.npy\"", quoted(digits_dir() / "y.npy"));
  return replaced(text, "outputs { history_dir: \"out/digits\" }", outputs);
}

// Digits rows `rows` (in that order) as x (rows, 64) float32 and y (rows,) int64 .npy files.
void write_digits_rows(const fs::path& x_path, const fs::path& y_path, const std::vector<int64_t>& rows) {
  const auto x = shardfit::ArrayFile::open(digits_dir() / "x.npy");
  const auto y = shardfit::ArrayFile::open(digits_dir() / "y.npy");
  ASSERT_EQ(x.rows(), kDigitsRows);
  ASSERT_EQ(x.cols(), kDigitsFeatures);
  std::vector<float> features(rows.size() * kDigitsFeatures);
  x.read_rows(rows, features.data());
  std::vector<int64_t> labels;
  for (const int64_t row : rows) labels.push_back(static_cast<int64_t>(y.value(row, 0)));
  shardfit::write_npy(x_path, features, {static_cast<int64_t>(rows.size()), kDigitsFeatures});
  shardfit::write_npy(y_path, labels, {static_cast<int64_t>(rows.size())});
}

std::vector<int64_t> row_range(int64_t begin, int64_t end) {
  std::vector<int64_t> rows;
  for (int64_t row = begin; row < end; ++row) rows.push_back(row);
  return rows;
}

// evaluate --output's JSON: {"accuracy": 0.85, "loss": 0.71, "samples": 360.0} -> name -> value.
std::map<std::string, double> read_metrics(const fs::path& path) {
  const std::string text = read_bytes(path);
  static const std::regex pair(R"re("([a-z_]+)": ([-+0-9.eE]+|NaN|-?Infinity))re");
  std::map<std::string, double> values;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), pair); it != std::sregex_iterator(); ++it) {
    values[(*it)[1]] = std::strtod((*it)[2].str().c_str(), nullptr);
  }
  EXPECT_FALSE(values.empty()) << path << ": " << text;
  return values;
}

double value_or_nan(const std::map<std::string, double>& values, const std::string& key) {
  const auto found = values.find(key);
  return found == values.end() ? std::nan("") : found->second;
}

// "loss [2.119 1.415 ...]" for failure messages: the curves a verdict was read from.
std::string curves_text(const shardfit::proto::History& history) {
  std::string text;
  for (const char* key : {"loss", "val_loss"}) {
    text += std::string(key) + " [";
    for (const auto& record : history.epochs()) {
      const auto found = record.values().find(key);
      if (found == record.values().end()) continue;
      char number[32];
      std::snprintf(number, sizeof number, "%.4g ", found->second);
      text += number;
    }
    text += "]\n";
  }
  return text;
}

// One short digits fit (3 epochs, 2 ranks) shared by the suite: its history and its exported w.npz. Trained on the
// first test that needs it, since CTest runs each test in a process of its own.
class InferenceTest : public FreshDirTest {
 protected:
  InferenceTest() : FreshDirTest("inference") {}

  static void TearDownTestSuite() {
    if (model_dir_.empty()) return;
    if (::testing::UnitTest::GetInstance()->failed_test_count() == 0) {
      fs::remove_all(model_dir_);
    } else {
      std::printf("[inference] trained model kept in %s\n", model_dir_.c_str());
    }
    model_dir_.clear();
    fit_.reset();
  }

  // Trains the shared model unless done; fails the calling test (not the suite) when that fit failed.
  static void expect_trained() {
    if (!fit_) {
      model_dir_ = make_temp_dir("inference_model");
      ASSERT_FALSE(model_dir_.empty());
      const std::string outputs = "outputs { history_dir: " + quoted(model_dir_ / "history") +
                                  " export_weights: " + quoted(model_dir_ / "w.npz") + " checkpoint_every_epochs: 0 }";
      write_text(model_dir_ / "job.pbtxt", digits_job(outputs));
      fit_ = std::make_unique<Launch>(shardfit(2, model_dir_, {"fit", job().string(), "--epochs", "3"}));
      std::printf("[inference] digits fit, 3 epochs on 2 ranks: %.3f s\n", fit_->seconds);
    }
    ASSERT_EQ(fit_->exit_code, 0) << describe(*fit_);
    ASSERT_TRUE(fs::is_regular_file(weights())) << describe(*fit_);
  }
  static fs::path job() { return model_dir_ / "job.pbtxt"; }
  static fs::path weights() { return model_dir_ / "w.npz"; }
  static fs::path history_dir() { return model_dir_ / "history"; }

  static fs::path model_dir_;
  static std::unique_ptr<Launch> fit_;
};

fs::path InferenceTest::model_dir_;
std::unique_ptr<Launch> InferenceTest::fit_;

// --- evaluate and predict ----------------------------------------------------------------------------------------

// softmax(relu(x W0 + b0) W1 + b1) in float64 from w.npz, against predict's float32 output; the accuracy of those
// predictions against y, to compare with evaluate's.
constexpr const char* kNumpyForward = R"(
import sys
import numpy as np
weights, x_path, y_path, p_path = sys.argv[1:5]
w = np.load(weights)
x = np.load(x_path).astype(np.float64)
p = np.load(p_path)
h = np.maximum(x @ w["dense_0/kernel"].astype(np.float64) + w["dense_0/bias"], 0.0)
z = h @ w["dense_1/kernel"].astype(np.float64) + w["dense_1/bias"]
e = np.exp(z - z.max(axis=1, keepdims=True))
reference = e / e.sum(axis=1, keepdims=True)
print("shape", *p.shape)
print("dtype", p.dtype)
print("max_abs_diff", repr(float(np.abs(p.astype(np.float64) - reference).max())))
print("accuracy", repr(float((p.argmax(axis=1) == np.load(y_path)).mean())))
)";

TEST_F(InferenceTest, EvaluateAndPredictDoNotDependOnTheRankCount) {
  expect_trained();
  // 1000 rows in a scrambled order (7 is coprime to 1797, so no row twice): at 3 ranks the slices are 334/333/333,
  // and with batches of 64 every rank ends on a short batch. Predict must keep this order, not the file's origin.
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < 1000; ++i) rows.push_back((i * 7 + 3) % kDigitsRows);
  write_digits_rows(dir_ / "x_test.npy", dir_ / "y_test.npy", rows);

  std::map<int, Launch> evaluated;
  for (const int ranks : {1, 3}) {
    const std::string n = std::to_string(ranks);
    const Launch evaluate = shardfit(ranks, dir_,
                                     {"evaluate", job().string(), "--weights", weights().string(), "--x", "x_test.npy",
                                      "--y", "y_test.npy", "--batch-size", "64", "--output", "metrics" + n + ".json"});
    ASSERT_EQ(evaluate.exit_code, 0) << describe(evaluate);
    EXPECT_EQ(count_of(evaluate.out, " samples - "), 1) << "rank 0 alone prints\n" << describe(evaluate);
    evaluated[ranks] = evaluate;
    const Launch predict = shardfit(ranks, dir_,
                                    {"predict", job().string(), "--weights", weights().string(), "--x", "x_test.npy",
                                     "--batch-size", "64", "--output", "p" + n + ".npy"});
    ASSERT_EQ(predict.exit_code, 0) << describe(predict);
    EXPECT_EQ(count_of(predict.out, "predicted 1000 rows -> p" + n + ".npy\n"), 1) << describe(predict);
    std::printf("[inference] %d rank(s): evaluate %.3f s, predict %.3f s\n", ranks, evaluate.seconds, predict.seconds);
  }

  // The console line, character for character, and the full-precision values up to the order of the sums.
  EXPECT_EQ(evaluated[1].out, evaluated[3].out);
  EXPECT_EQ(evaluated[1].out.rfind("1000 samples - accuracy: ", 0), 0u) << evaluated[1].out;
  const auto one = read_metrics(dir_ / "metrics1.json");
  const auto three = read_metrics(dir_ / "metrics3.json");
  EXPECT_EQ(value_or_nan(one, "samples"), 1000.0);
  EXPECT_EQ(value_or_nan(three, "samples"), 1000.0);
  EXPECT_EQ(value_or_nan(one, "accuracy"), value_or_nan(three, "accuracy"));  // a count over 1000 either way
  EXPECT_NEAR(value_or_nan(one, "loss"), value_or_nan(three, "loss"), 1e-12 * value_or_nan(one, "loss"));

  // Byte for byte: each row's forward pass does not depend on which rank or batch it fell into.
  const std::string p1 = read_bytes(dir_ / "p1.npy");
  EXPECT_GT(p1.size(), 1000u * 10u * sizeof(float));
  EXPECT_TRUE(p1 == read_bytes(dir_ / "p3.npy")) << "predict's output differs between 1 and 3 ranks";

  const Launch numpy = python(kNumpyForward, {weights().string(), (dir_ / "x_test.npy").string(),
                                              (dir_ / "y_test.npy").string(), (dir_ / "p1.npy").string()});
  ASSERT_EQ(numpy.exit_code, 0) << describe(numpy);
  EXPECT_NE(numpy.out.find("shape 1000 10\n"), std::string::npos) << numpy.out;
  EXPECT_NE(numpy.out.find("dtype float32\n"), std::string::npos) << numpy.out;
  std::smatch found;
  ASSERT_TRUE(std::regex_search(numpy.out, found, std::regex(R"(max_abs_diff (\S+))"))) << numpy.out;
  EXPECT_LT(std::stod(found[1]), 1e-5) << "predict vs the NumPy forward pass from w.npz, rows in input order";
  ASSERT_TRUE(std::regex_search(numpy.out, found, std::regex(R"(accuracy (\S+))"))) << numpy.out;
  EXPECT_NEAR(std::stod(found[1]), value_or_nan(one, "accuracy"), 1e-12) << "evaluate vs argmax of predict";
}

TEST_F(InferenceTest, ExportedWeightsLoadInNumpyWithKerasShapes) {
  expect_trained();
  const Launch numpy = python(R"(
import sys
import numpy as np
with np.load(sys.argv[1]) as w:
    for name in w.files:
        print(name, w[name].shape, w[name].dtype)
)",
                              {weights().string()});
  ASSERT_EQ(numpy.exit_code, 0) << describe(numpy);
  // Keras's Dense: kernel (in, out), bias (out,), in model order, named after the layers (kernels/model_factory.cpp).
  EXPECT_EQ(numpy.out,
            "dense_0/kernel (64, 128) float32\n"
            "dense_0/bias (128,) float32\n"
            "dense_1/kernel (128, 10) float32\n"
            "dense_1/bias (10,) float32\n");
}

TEST_F(InferenceTest, EvaluateOnTheValidationRowsGivesTheFinalValMetrics) {
  expect_trained();
  // The rows fit validated on, evaluated with the weights of the end of the last epoch: the same loss and accuracy,
  // sliced over 3 ranks rather than fit's 2.
  write_digits_rows(dir_ / "x_val.npy", dir_ / "y_val.npy", row_range(kTrainRows, kDigitsRows));
  const Launch evaluate = shardfit(3, dir_,
                                   {"evaluate", job().string(), "--weights", weights().string(), "--x", "x_val.npy",
                                    "--y", "y_val.npy", "--output", "metrics.json"});
  ASSERT_EQ(evaluate.exit_code, 0) << describe(evaluate);
  const auto metrics = read_metrics(dir_ / "metrics.json");
  const auto history = shardfit::read_history_pb(history_dir() / "history.pb");
  ASSERT_EQ(history.epochs_size(), 3);
  const auto& last = history.epochs(2).values();
  ASSERT_TRUE(last.count("val_loss") && last.count("val_accuracy"));
  EXPECT_EQ(value_or_nan(metrics, "samples"), 360.0);
  EXPECT_NEAR(value_or_nan(metrics, "loss"), last.at("val_loss"), 1e-6 * last.at("val_loss"));
  EXPECT_NEAR(value_or_nan(metrics, "accuracy"), last.at("val_accuracy"), 1e-6 * last.at("val_accuracy"));
}

TEST_F(InferenceTest, OneUnitSigmoidModelEvaluatesLikeFitValidates) {
  // Digit parity, binary_crossentropy on one sigmoid unit: its 0/1 targets are one value per row, like class ids, but
  // must not be checked as ids in [0, 1) (which rejects every 1).
  write_digits_rows(dir_ / "x.npy", dir_ / "digit.npy", row_range(0, 400));
  const auto digits = shardfit::ArrayFile::open(dir_ / "digit.npy");
  std::vector<float> odd;
  for (int64_t row = 0; row < digits.rows(); ++row) {
    odd.push_back(static_cast<float>(static_cast<int64_t>(digits.value(row, 0)) % 2));
  }
  shardfit::write_npy(dir_ / "odd.npy", odd, {digits.rows()});
  std::vector<float> odd_val(odd.begin() + 320, odd.end());
  shardfit::write_npy(dir_ / "odd_val.npy", odd_val, {80});
  write_digits_rows(dir_ / "x_val.npy", dir_ / "digit_val.npy", row_range(320, 400));
  write_text(dir_ / "job.pbtxt", R"(model {
  layers { dense { units: 16 activation: "relu" } }
  layers { dense { units: 1 activation: "sigmoid" } }
}
loss: "binary_crossentropy"
metrics: "accuracy"
fit { epochs: 2 batch_size: 16 validation_split: 0.2 verbose: 0 }
data { train { x { path: "x.npy" } y { path: "odd.npy" } } }
outputs { history_dir: "history" export_weights: "w.npz" checkpoint_every_epochs: 0 }
)");
  const Launch fit = shardfit(2, dir_, {"fit", "job.pbtxt"});
  ASSERT_EQ(fit.exit_code, 0) << describe(fit);
  const Launch evaluate = shardfit(2, dir_,
                                   {"evaluate", "job.pbtxt", "--weights", "w.npz", "--x", "x_val.npy", "--y",
                                    "odd_val.npy", "--output", "metrics.json"});
  ASSERT_EQ(evaluate.exit_code, 0) << describe(evaluate);
  const auto metrics = read_metrics(dir_ / "metrics.json");
  const auto history = shardfit::read_history_pb(dir_ / "history" / "history.pb");
  ASSERT_EQ(history.epochs_size(), 2);
  const auto& last = history.epochs(1).values();
  ASSERT_TRUE(last.count("val_loss") && last.count("val_accuracy"));
  EXPECT_EQ(value_or_nan(metrics, "samples"), 80.0);
  EXPECT_NEAR(value_or_nan(metrics, "loss"), last.at("val_loss"), 1e-6 * last.at("val_loss"));
  EXPECT_NEAR(value_or_nan(metrics, "accuracy"), last.at("val_accuracy"), 1e-6);
}

// --- plot --------------------------------------------------------------------------------------------------------

// One line per SVG: whether it parses as SVG, its curves (series:declared points:path commands), the legend's and
// axis labels' texts, and how many captions (the verdict) it has.
constexpr const char* kSvgFacts = R"(
import sys
import xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
for path in sys.argv[1:]:
    root = ET.parse(path).getroot()
    of = lambda c: [e for e in root.iter() if e.get("class") == c]
    text = lambda e: "".join(e.itertext()).strip()
    curves = ",".join("%s:%s:%d" % (e.get("data-series"), e.get("data-points"),
                                    sum(e.get("d").count(c) for c in "ML")) for e in of("curve"))
    legend = ",".join(text(t) for g in of("legend") for t in g.iter(ns + "text"))
    axes = ",".join(text(e) for e in of("axis-label"))
    print("svg=%s curves=%s legend=%s axes=%s captions=%d" % (root.tag == ns + "svg", curves, legend, axes,
                                                               len(of("caption"))))
)";

std::string expected_svg_facts(const std::string& metric) {
  return "svg=True curves=" + metric + ":3:3,val_" + metric + ":3:3 legend=" + metric + ",val_" + metric +
         " axes=Epoch," + metric + " captions=1\n";
}

TEST_F(InferenceTest, PlotWritesBothCurvesWithLegendAndAxisLabels) {
  expect_trained();
  const fs::path history = dir_ / "history";
  fs::create_directories(history);
  fs::copy_file(history_dir() / "history.pb", history / "history.pb");

  const Launch loss = shardfit(1, dir_, {"plot", history.string()});
  ASSERT_EQ(loss.exit_code, 0) << describe(loss);
  EXPECT_EQ(loss.out, (history / "loss.svg").string() + "\n");
  const Launch both = shardfit(2, dir_, {"plot", history.string(), "--metric", "accuracy", "--metric", "loss"});
  ASSERT_EQ(both.exit_code, 0) << describe(both);
  EXPECT_EQ(both.out, (history / "accuracy.svg").string() + "\n" + (history / "loss.svg").string() + "\n")
      << "rank 0 alone writes and prints";
  const Launch named = shardfit(1, dir_, {"plot", history.string(), "--metric", "accuracy", "--output", "acc.svg"});
  ASSERT_EQ(named.exit_code, 0) << describe(named);

  // fit's own loss.svg too: the same picture, written at the end of the run.
  const std::vector<std::pair<fs::path, std::string>> files = {{history / "loss.svg", "loss"},
                                                               {history / "accuracy.svg", "accuracy"},
                                                               {dir_ / "acc.svg", "accuracy"},
                                                               {history_dir() / "loss.svg", "loss"}};
  std::vector<std::string> args;
  std::string expected;
  for (const auto& [path, metric] : files) {
    ASSERT_TRUE(fs::is_regular_file(path)) << path;
    args.push_back(path.string());
    expected += expected_svg_facts(metric);
  }
  const Launch facts = python(kSvgFacts, args);
  ASSERT_EQ(facts.exit_code, 0) << describe(facts);
  EXPECT_EQ(facts.out, expected);
}

// What a user types first: the history.json fit wrote (or its csv) and -o / --output; several metrics in one file
// become one panel each; titles read as words.
TEST_F(InferenceTest, PlotReadsJsonOrCsvAndTakesDashO) {
  expect_trained();
  const fs::path history = history_dir();
  const Launch from_json = shardfit(1, dir_, {"plot", (history / "history.json").string(), "-o", "loss.svg"});
  ASSERT_EQ(from_json.exit_code, 0) << describe(from_json);
  EXPECT_EQ(from_json.out, "loss.svg\n");
  const Launch from_csv = shardfit(
      2, dir_, {"plot", (history / "history.csv").string(), "--metric", "val_accuracy", "--output", "accuracy.svg"});
  ASSERT_EQ(from_csv.exit_code, 0) << describe(from_csv);
  const Launch panels = shardfit(
      1, dir_,
      {"plot", (history / "history.json").string(), "--metric", "loss", "--metric", "accuracy", "-o", "both.svg"});
  ASSERT_EQ(panels.exit_code, 0) << describe(panels);

  const Launch facts =
      python(kSvgFacts, {(dir_ / "loss.svg").string(), (dir_ / "accuracy.svg").string(), (dir_ / "both.svg").string()});
  ASSERT_EQ(facts.exit_code, 0) << describe(facts);
  EXPECT_EQ(facts.out, expected_svg_facts("loss") +  // the verdict's caption comes from run.json
                           "svg=True curves=accuracy:3:3,val_accuracy:3:3 legend=accuracy,val_accuracy "
                           "axes=Epoch,accuracy captions=0\n" +  // history.csv holds no verdict
                           "svg=True curves=loss:3:3,val_loss:3:3,accuracy:3:3,val_accuracy:3:3 "
                           "legend=loss,val_loss,accuracy,val_accuracy axes=Epoch,loss,Epoch,accuracy captions=1\n");
  EXPECT_NE(read_bytes(dir_ / "accuracy.svg").find("<title>Training and validation accuracy</title>"),
            std::string::npos);
  const std::string both = read_bytes(dir_ / "both.svg");
  EXPECT_NE(both.find("<title>Training and validation loss</title>"), std::string::npos);
  EXPECT_NE(both.find("<title>Training and validation accuracy</title>"), std::string::npos);

  // A file that is no history is refused, naming it and what plot reads.
  write_text(dir_ / "notes.txt", "x");
  const Launch refused = shardfit(1, dir_, {"plot", "notes.txt", "-o", "x.svg"});
  EXPECT_EQ(refused.exit_code, 1) << describe(refused);
  EXPECT_NE(refused.err.find("cannot plot 'notes.txt': expected a history folder, history.pb, history.json"),
            std::string::npos)
      << describe(refused);
  EXPECT_FALSE(fs::exists(dir_ / "x.svg"));
}

// --- the verdict on real runs --------------------------------------------------------------------------------------

// A job on the first 150 digits (x150.npy / y150.npy in the working directory), 30% held out, batches of 16.
std::string small_digits_job(const std::string& layers, const std::string& optimizer, int epochs) {
  return "model {\n" + layers + "}\n" +
         "loss: \"sparse_categorical_crossentropy\"\nmetrics: \"accuracy\"\n"
         "optimizer { " +
         optimizer + " }\nfit { epochs: " + std::to_string(epochs) +
         " batch_size: 16 validation_split: 0.3 seed: 1337 verbose: 2 }\n"
         "data { train { x { path: \"x150.npy\" } y { path: \"y150.npy\" } } }\n"
         "outputs { history_dir: \"history\" checkpoint_every_epochs: 0 }\n";
}

// Runs the job on 2 ranks and returns history.pb, after checking that run.json says the same and that the
// verdict line was printed exactly once (by rank 0).
shardfit::proto::History fit_and_read_verdict(const fs::path& dir, const std::string& job_text) {
  write_digits_rows(dir / "x150.npy", dir / "y150.npy", row_range(0, 150));
  write_text(dir / "job.pbtxt", job_text);
  const Launch fit = shardfit(2, dir, {"fit", "job.pbtxt"});
  std::printf("[inference] verdict run: %.3f s\n", fit.seconds);
  EXPECT_EQ(fit.exit_code, 0) << describe(fit);
  shardfit::proto::History history;
  try {
    history = shardfit::read_history_pb(dir / "history" / "history.pb");
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what() << "\n" << describe(fit);
    return history;
  }
  EXPECT_FALSE(history.diagnosis().summary().empty());
  EXPECT_EQ(count_of(fit.out + fit.err, history.diagnosis().summary()), 1) << describe(fit);

  const Launch json = python(R"(
import json, sys
d = json.load(open(sys.argv[1]))["diagnosis"]
print(d["verdict"], d["overfitting_from_epoch"], d["best_epoch"])
)",
                             {(dir / "history" / "run.json").string()});
  EXPECT_EQ(json.exit_code, 0) << describe(json);
  const auto& d = history.diagnosis();
  EXPECT_EQ(json.out, d.verdict() + " " + std::to_string(d.overfitting_from_epoch()) + " " +
                          std::to_string(d.best_epoch()) + "\n");
  return history;
}

TEST_F(InferenceTest, LargeMlpOnASmallSliceIsOverfitting) {
  // 105 training rows, 301k parameters, Adam: training loss goes to ~1e-3 while val_loss stops improving early.
  const auto history =
      fit_and_read_verdict(dir_, small_digits_job("  layers { dense { units: 512 activation: \"relu\" } }\n"
                                                  "  layers { dense { units: 512 activation: \"relu\" } }\n"
                                                  "  layers { dense { units: 10 activation: \"softmax\" } }\n",
                                                  "adam { learning_rate: 0.001 }", 60));
  ASSERT_EQ(history.epochs_size(), 60);
  const auto& d = history.diagnosis();
  EXPECT_EQ(d.verdict(), "overfitting") << d.summary() << "\n" << curves_text(history);
  EXPECT_GE(d.overfitting_from_epoch(), 1) << d.summary();
  EXPECT_LT(d.overfitting_from_epoch(), 60) << d.summary();
  if (d.verdict() == "overfitting") {
    EXPECT_EQ(count_of(d.summary(), "overfitting from epoch " + std::to_string(d.overfitting_from_epoch() + 1)), 1)
        << "the line counts epochs from 1\n"
        << d.summary();
  }
}

TEST_F(InferenceTest, TinyModelWithATinyRateIsUnderfitting) {
  // One softmax layer moved by SGD at 1e-5: after 10 epochs both losses are where they started, above chance.
  const auto history =
      fit_and_read_verdict(dir_, small_digits_job("  layers { dense { units: 10 activation: \"softmax\" } }\n",
                                                  "sgd { learning_rate: 0.00001 }", 10));
  ASSERT_EQ(history.epochs_size(), 10);
  const auto& d = history.diagnosis();
  EXPECT_EQ(d.verdict(), "underfitting") << d.summary() << "\n" << curves_text(history);
  EXPECT_EQ(d.overfitting_from_epoch(), -1);
  EXPECT_EQ(d.summary().rfind("underfitting: ", 0), 0u) << d.summary();
}

// --- errors: every rank exits non-zero within seconds, one message naming the problem -----------------------------

TEST_F(InferenceTest, EvaluateWithoutWeights) {
  write_text(dir_ / "job.pbtxt", digits_job("outputs { history_dir: \"history\" }"));
  const Launch launch = shardfit(
      2, dir_,
      {"evaluate", "job.pbtxt", "--x", (digits_dir() / "x.npy").string(), "--y", (digits_dir() / "y.npy").string()},
      true);
  const std::string message = expect_failure_on_every_rank(launch, 2);
  EXPECT_NE(message.find("--weights"), std::string::npos) << message;
}

TEST_F(InferenceTest, WeightsOfAnotherArchitecture) {
  expect_trained();
  // The job describes a different model than the one w.npz came from: a narrower hidden layer (shapes), or the same
  // layers under other names.
  const std::string hidden = "layers { dense { units: 128 activation: \"relu\" } }";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"layers { dense { units: 32 activation: \"relu\" } }", {"dense_0/kernel", "(64, 32)", "(64, 128)"}},
      {"layers { name: \"hidden\" dense { units: 128 activation: \"relu\" } }", {"hidden/kernel", "dense_0/kernel"}},
  };
  for (const auto& [layer, named] : cases) {
    SCOPED_TRACE(layer);
    write_text(dir_ / "job.pbtxt", replaced(digits_job("outputs { history_dir: \"history\" }"), hidden, layer));
    const Launch launch = shardfit(2, dir_,
                                   {"evaluate", "job.pbtxt", "--weights", weights().string(), "--x",
                                    (digits_dir() / "x.npy").string(), "--y", (digits_dir() / "y.npy").string()},
                                   true);
    const std::string message = expect_failure_on_every_rank(launch, 2);
    EXPECT_NE(message.find(weights().string()), std::string::npos) << message;
    for (const std::string& part : named) EXPECT_NE(message.find(part), std::string::npos) << part << "\n" << message;
  }
}

TEST_F(InferenceTest, PredictWithXOfTheWrongWidth) {
  expect_trained();
  std::vector<float> x(20 * 60, 0.5F);
  shardfit::write_npy(dir_ / "x60.npy", x, {20, 60});
  const Launch launch = shardfit(
      2, dir_, {"predict", job().string(), "--weights", weights().string(), "--x", "x60.npy", "--output", "p.npy"},
      true);
  const std::string message = expect_failure_on_every_rank(launch, 2);
  // The data is wrong, not the weights: the message names x, its width and the width the weights take.
  EXPECT_NE(message.find("x60.npy"), std::string::npos) << message;
  EXPECT_NE(message.find("60 features"), std::string::npos) << message;
  EXPECT_NE(message.find("64"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir_ / "p.npy"));
}

}  // namespace
