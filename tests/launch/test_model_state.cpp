// The model's state seen from outside, at 2 ranks: a layer too large for memory is an error naming the layer (not a
// segfault); a checkpoint that was damaged or edited is refused on --resume naming the file and the field, on every
// rank; evaluate and predict take fit's checkpoint.pb as weights as well as an .npz, with the same results.
// Not an MPI test itself: it starts `mpirun -np 2 shardfit ...`.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "dist/io/checkpoint_file.h"
#include "dist/io/npy_writer.h"
#include "kernels/error.h"
#include "tests/support/cli_fixture.h"
#include "tests/support/launch_process.h"
#include "tests/support/text.h"

namespace {

namespace fs = std::filesystem;
using shardfit::testing::contains;
using shardfit::testing::count_of;
using shardfit::testing::describe;
using shardfit::testing::digits_dir;
using shardfit::testing::error_message;
using shardfit::testing::FreshDirTest;
using shardfit::testing::Launch;
using shardfit::testing::quoted;
using shardfit::testing::rank_statuses;
using shardfit::testing::read_bytes;
using shardfit::testing::replaced;
using shardfit::testing::Watch;
using shardfit::testing::write_text;

constexpr int kRanks = 2;
constexpr double kKillSeconds = 40.0;  // no launch is waited for longer than this
constexpr double kLimitSeconds = shardfit::testing::kFailureLimitSeconds;

// 24 samples of 64 features, class ids 0..9; batch 8 on 2 ranks: 3 steps per epoch.
constexpr const char* kJob = R"(model {
  layers { dense { units: 16 activation: "relu" } }
  layers { dense { units: 10 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
metrics: "accuracy"
fit { epochs: 2 batch_size: 8 verbose: 0 }
data { train { x { path: "x.npy" } y { path: "y.npy" } } }
outputs { history_dir: "history" export_weights: "w.npz" }
)";
constexpr int64_t kRows = 24;
constexpr int64_t kFeatures = 64;

void write_data(const fs::path& dir) {
  std::vector<float> x(kRows * kFeatures);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7) % 19) / 18.0F;
  std::vector<int64_t> y(kRows);
  for (int64_t i = 0; i < kRows; ++i) y[i] = i % 10;
  shardfit::write_npy(dir / "x.npy", x, {kRows, kFeatures});
  shardfit::write_npy(dir / "y.npy", y, {kRows});
}

class ModelStateTest : public FreshDirTest {
 protected:
  ModelStateTest() : FreshDirTest("state") {}

  Launch run(const std::vector<std::string>& args, Watch watch = Watch::kEachRankReports) const {
    return shardfit::testing::run_mpirun(kRanks, dir_, args, watch, kKillSeconds);
  }

  // Trains the job (2 epochs) and returns the checkpoint it left.
  fs::path trained() {
    write_data(dir_);
    write_text(dir_ / "job.pbtxt", kJob);
    const Launch launch = run({"fit", "job.pbtxt"}, Watch::kPlain);
    EXPECT_EQ(launch.exit_code, 0) << describe(launch);
    const fs::path checkpoint = dir_ / "history" / "checkpoints" / "checkpoint.pb";
    EXPECT_TRUE(fs::is_regular_file(checkpoint)) << describe(launch);
    return checkpoint;
  }
};

// Every rank ends by itself with status 1, within the limit, and the one message is returned.
std::string expect_refused_on_every_rank(const Launch& launch, const std::string& name) {
  const std::string message = shardfit::testing::expect_failure_on_every_rank(launch, kRanks, kLimitSeconds, 1);
  std::printf("[state] %-34s every rank exited 1 after %.3f s\n", name.c_str(), launch.seconds);
  return message;
}

// How errors name the checkpoint (the end of its path: outputs may resolve against the job file or the working
// directory, both dir_ here).
const std::string kShown = "checkpoints/checkpoint.pb'";

// --- 1. a layer too large for memory -------------------------------------------------------------------------------

TEST_F(ModelStateTest, ALayerTooLargeForMemoryIsNamedNotASegfault) {
  const std::string digits = read_bytes(digits_dir() / "mlp.pbtxt");
  for (const std::string& units : std::vector<std::string>{"1000000000", "4611686018427387904"}) {
    std::string job = replaced(digits, "units: 128", "units: " + units);
    job = replaced(replaced(job, "\"x.npy\"", quoted(digits_dir() / "x.npy")), "\"y.npy\"",
                   quoted(digits_dir() / "y.npy"));
    job = replaced(job, "epochs: 30", "epochs: 1");
    write_text(dir_ / "big.pbtxt", job);
    const Launch launch = run({"fit", "big.pbtxt"});
    const std::string message = expect_refused_on_every_rank(launch, "units: " + units);
    EXPECT_TRUE(contains(message, "dense_0 (units " + units + ")")) << message;
    EXPECT_TRUE(contains(message, "model.layers[0].dense.units")) << "the hint names the field\n" << message;
    EXPECT_FALSE(contains(message, "optimizer parameter count")) << message;
    if (units == "1000000000") {
      // 65e9 parameters x 4 floats (parameter, gradient, Adam's m and v) x 4 bytes.
      EXPECT_TRUE(contains(message, "needs 969 GiB of parameters, gradients and optimizer state")) << message;
    }
  }
}

// --- 6. checkpoints that cannot be trusted -------------------------------------------------------------------------

TEST_F(ModelStateTest, AFlippedBitInTheCheckpointIsRefused) {
  const fs::path checkpoint = trained();
  std::string bytes = read_bytes(checkpoint);
  ASSERT_GT(bytes.size(), 200U);
  bytes[bytes.size() / 2] ^= 0x04;  // inside the parameters: still a parseable protobuf, only the checksum knows
  write_text(checkpoint, bytes);
  const Launch launch = run({"fit", "job.pbtxt", "--resume", "--epochs", "3"});
  const std::string message = expect_refused_on_every_rank(launch, "flipped bit");
  EXPECT_TRUE(contains(message, kShown + " is damaged")) << message;
}

TEST_F(ModelStateTest, HandEditedFieldsAreRefusedNamingTheField) {
  const fs::path checkpoint = trained();
  const std::string original = read_bytes(checkpoint);
  struct Edit {
    std::string name;
    std::function<void(shardfit::proto::Checkpoint&)> apply;
    std::string expected;
  };
  const std::vector<Edit> edits = {
      {"NaN learning rate",
       [](auto& c) { c.mutable_optimizer()->set_learning_rate(std::numeric_limits<float>::quiet_NaN()); },
       "field optimizer.learning_rate = nan"},
      {"step past the epoch", [](auto& c) { c.set_step_in_epoch(4); }, "field step_in_epoch = 4"},
      {"negative epoch", [](auto& c) { c.set_epoch(-1); }, "field epoch = -1"},
      {"negative iterations", [](auto& c) { c.mutable_optimizer()->set_iterations(-5); },
       "field optimizer.iterations = -5"},
  };
  for (const Edit& edit : edits) {
    // Edited with the generated classes and summed again: only the range checks can catch it.
    shardfit::proto::Checkpoint c = shardfit::decode_checkpoint(original, checkpoint);
    edit.apply(c);
    write_text(checkpoint, shardfit::encode_checkpoint(c));
    const Launch launch = run({"fit", "job.pbtxt", "--resume", "--epochs", "3"});
    const std::string message = expect_refused_on_every_rank(launch, edit.name);
    EXPECT_TRUE(contains(message, kShown + ": " + edit.expected)) << message;
  }
  // The same file re-encoded unchanged resumes: what was refused was the field, not the re-encoding.
  write_text(checkpoint, shardfit::encode_checkpoint(shardfit::decode_checkpoint(original, checkpoint)));
  const Launch resumed = run({"fit", "job.pbtxt", "--resume", "--epochs", "3"}, Watch::kPlain);
  EXPECT_EQ(resumed.exit_code, 0) << describe(resumed);
}

TEST_F(ModelStateTest, SampleCountsThatDoNotMatchTheStepAreRefused) {
  // The checkpoint of the end of epoch 2, edited into "epoch 2, all 3 steps trained" with its (zero) per-rank sums
  // kept: the epoch's loss would be 0 / 0. Re-summed, so only the count check can catch it.
  const fs::path checkpoint = trained();
  shardfit::proto::Checkpoint edited = shardfit::decode_checkpoint(read_bytes(checkpoint), checkpoint);
  ASSERT_EQ(edited.epoch(), 2);
  ASSERT_EQ(edited.step_in_epoch(), 0);
  const int sums_per_rank = edited.rank_epoch_sums_size() / kRanks;  // loss, accuracy, count
  ASSERT_EQ(sums_per_rank, 3);
  const int64_t steps = edited.global_step() / 2;
  edited.set_epoch(1);
  edited.set_step_in_epoch(steps);
  edited.set_global_step(2 * steps);
  edited.mutable_history()->mutable_epochs()->RemoveLast();
  write_text(checkpoint, shardfit::encode_checkpoint(edited));
  const Launch launch = run({"fit", "job.pbtxt", "--resume", "--epochs", "2"});
  const std::string message = expect_refused_on_every_rank(launch, "zeroed sample counts at the last step");
  EXPECT_TRUE(contains(message, kShown +
                                    ": field rank_epoch_sums (sample counts of ranks 0 to 1, summed) = 0: "
                                    "expected " +
                                    std::to_string(kRows)))
      << message;
  EXPECT_FALSE(fs::exists(dir_ / "history" / "history.json") &&
               contains(read_bytes(dir_ / "history" / "history.json"), "NaN"))
      << "no NaN history was written";

  // The same step with each rank's true share (half the rows each) and some loss resumes and finishes epoch 2.
  for (int r = 0; r < kRanks; ++r) {
    edited.set_rank_epoch_sums(r * sums_per_rank, 2.5 * kRows / kRanks);       // loss sum
    edited.set_rank_epoch_sums(r * sums_per_rank + 1, 0.25 * kRows / kRanks);  // accuracy sum
    edited.set_rank_epoch_sums(r * sums_per_rank + 2, static_cast<double>(kRows / kRanks));
  }
  write_text(checkpoint, shardfit::encode_checkpoint(edited));
  const Launch resumed = run({"fit", "job.pbtxt", "--resume", "--epochs", "2"}, Watch::kPlain);
  EXPECT_EQ(resumed.exit_code, 0) << describe(resumed);
  const std::string history = read_bytes(dir_ / "history" / "history.json");
  EXPECT_TRUE(contains(history, "2.5")) << "epoch 2's loss is the saved sums' mean\n" << history;
  EXPECT_FALSE(contains(history, "NaN") || contains(history, "nan")) << history;
}

TEST_F(ModelStateTest, ACheckpointThatIsAFolderIsCalledOne) {
  const fs::path checkpoint = trained();
  fs::remove(checkpoint);
  fs::create_directories(checkpoint);
  const Launch launch = run({"fit", "job.pbtxt", "--resume", "--epochs", "3"});
  const std::string message = expect_refused_on_every_rank(launch, "checkpoint is a folder");
  EXPECT_TRUE(contains(message, kShown + " is a folder")) << message;
  EXPECT_FALSE(contains(message, "empty")) << message;
}

// --- 14. checkpoint.pb as weights ----------------------------------------------------------------------------------

TEST_F(ModelStateTest, EvaluateAndPredictTakeACheckpointAsTheNpz) {
  const fs::path checkpoint = trained();
  // The checkpoint of the last epoch and export_weights hold the same final weights.
  std::map<std::string, std::string> metrics;
  std::map<std::string, std::string> predictions;
  for (const std::string& weights : std::vector<std::string>{"w.npz", checkpoint.string()}) {
    const std::string tag = weights == "w.npz" ? "npz" : "checkpoint";
    const Launch evaluated =
        run({"evaluate", "job.pbtxt", "--weights", weights, "--x", "x.npy", "--y", "y.npy", "--output", tag + ".json"},
            Watch::kPlain);
    ASSERT_EQ(evaluated.exit_code, 0) << describe(evaluated);
    metrics[tag] = read_bytes(dir_ / (tag + ".json"));
    const Launch predicted =
        run({"predict", "job.pbtxt", "--weights", weights, "--x", "x.npy", "--output", tag + ".npy"}, Watch::kPlain);
    ASSERT_EQ(predicted.exit_code, 0) << describe(predicted);
    predictions[tag] = read_bytes(dir_ / (tag + ".npy"));
  }
  EXPECT_FALSE(metrics["npz"].empty());
  EXPECT_EQ(metrics["checkpoint"], metrics["npz"]) << "evaluate: the same loss and metrics to the last digit";
  EXPECT_GT(predictions["npz"].size(), static_cast<size_t>(kRows * 10 * 4));
  EXPECT_EQ(predictions["checkpoint"], predictions["npz"]) << "predict: the same outputs byte for byte";

  // Neither an .npz nor a checkpoint: said so, with what the file starts with.
  write_text(dir_ / "notes.txt", "these are not weights\n");
  const Launch launch = run({"evaluate", "job.pbtxt", "--weights", "notes.txt", "--x", "x.npy", "--y", "y.npy"});
  const std::string message = expect_refused_on_every_rank(launch, "weights neither npz nor checkpoint");
  EXPECT_TRUE(contains(message, "notes.txt: not a ZIP archive (.npz) nor a shardfit checkpoint")) << message;
}

}  // namespace
