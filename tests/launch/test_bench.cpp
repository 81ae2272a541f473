// End-to-end tests of `shardfit bench`, run from outside MPI: `mpirun -np P shardfit bench ...` at 1 and 2 ranks
// prints its table and appends a JSON record that Python's json module reads with every field present and sane
// (tests/python/check_bench_record.py); bad flags and bad models fail on every rank with one clear message. Tiny
// step counts: each launch takes about a second.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/cli_fixture.h"
#include "tests/support/launch_process.h"

namespace {

namespace fs = std::filesystem;
using shardfit::testing::count_of;
using shardfit::testing::describe;
using shardfit::testing::FreshDirTest;
using shardfit::testing::Launch;
using shardfit::testing::launch_process;
using shardfit::testing::source_dir;
using shardfit::testing::Watch;
using shardfit::testing::write_text;

constexpr double kKillSeconds = 60.0;

class BenchTest : public FreshDirTest {
 protected:
  BenchTest() : FreshDirTest("bench") {}

  Launch bench(int ranks, const std::vector<std::string>& flags, Watch watch = Watch::kPlain) {
    std::vector<std::string> args = {"bench"};
    args.insert(args.end(), flags.begin(), flags.end());
    return shardfit::testing::run_mpirun(ranks, dir_, args, watch, kKillSeconds);
  }

  // check_bench_record.py on the records file: "ok: N record(s)" or the first problem.
  // The last record's overlap and bucket size as given (defaults: off, 4 MiB).
  void expect_records(int records, int ranks, const std::string& mode, int global_batch,
                      const std::vector<std::string>& also = {}) {
    std::vector<std::string> command = {"/usr/bin/python3",
                                        (source_dir() / "tests" / "python" / "check_bench_record.py").string(),
                                        (dir_ / "bench.jsonl").string(),
                                        "--records",
                                        std::to_string(records),
                                        "--ranks",
                                        std::to_string(ranks),
                                        "--mode",
                                        mode,
                                        "--global-batch",
                                        std::to_string(global_batch)};
    command.insert(command.end(), also.begin(), also.end());
    const Launch check = launch_process(command, kKillSeconds);
    EXPECT_EQ(check.exit_code, 0) << describe(check);
    EXPECT_EQ(check.out, "ok: " + std::to_string(records) + " record(s)\n") << describe(check);
  }

  // The failure contract (cli_fixture.h): every rank exits non-zero, the message printed once; returns it.
  std::string expect_refused(int ranks, const std::vector<std::string>& flags) {
    return shardfit::testing::expect_failure_on_every_rank(bench(ranks, flags, Watch::kEachRankReports), ranks);
  }
};

// The table's rows, the same at any rank count.
void expect_table(const Launch& launch) {
  for (const char* row :
       {"shardfit bench: mlp (784-1024-1024-10, 1863690 parameters, sgd", "samples/s", "step time", "gather", "forward",
        "backward", "optimizer", "exposed comm", "sum", "allreduce", "overlap", "machine"}) {
    EXPECT_EQ(count_of(launch.out, row) >= 1, true) << "no '" << row << "' in the table\n" << describe(launch);
  }
}

TEST_F(BenchTest, OneRankPrintsTheTableAndARecordWithoutAllreduce) {
  const Launch launch = bench(
      1, {"--model", "mlp", "--batch-size", "32", "--warmup-steps", "1", "--steps", "3", "--json", "bench.jsonl"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  expect_table(launch);
  EXPECT_EQ(count_of(launch.out, "none: one rank has nothing to exchange"), 1) << describe(launch);
  expect_records(1, 1, "strong", 32);
}

TEST_F(BenchTest, TwoRanksStrongThenWeakAppendTwoRecords) {
  const Launch strong = bench(
      2, {"--model", "mlp", "--batch-size", "32", "--warmup-steps", "1", "--steps", "3", "--json", "bench.jsonl"});
  ASSERT_EQ(strong.exit_code, 0) << describe(strong);
  expect_table(strong);
  EXPECT_EQ(count_of(strong.out, "32 global, 16-16 per rank"), 1) << describe(strong);
  EXPECT_EQ(count_of(strong.out, "raw allreduce"), 1) << describe(strong);
  expect_records(1, 2, "strong", 32);

  const Launch weak = bench(
      2, {"--model=mlp", "--mode=weak", "--batch-size=16", "--warmup-steps=1", "--steps=3", "--json=bench.jsonl"});
  ASSERT_EQ(weak.exit_code, 0) << describe(weak);
  EXPECT_EQ(count_of(weak.out, "weak scaling"), 1) << describe(weak);
  EXPECT_EQ(count_of(weak.out, "32 global, 16-16 per rank"), 1) << describe(weak);
  expect_records(2, 2, "weak", 32);
}

// --reduce-dtype bfloat16: the gradients after the first, small bucket travel as bf16, so a step sends about half
// the bytes (checked against the parameter count by check_bench_record.py), in one bucket more than float32.
TEST_F(BenchTest, Bfloat16ReductionSendsHalfTheBytes) {
  const Launch launch = bench(2, {"--model=mlp", "--batch-size=32", "--warmup-steps=1", "--steps=3",
                                  "--reduce-dtype=bfloat16", "--json=bench.jsonl"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  expect_table(launch);
  // 1863690 gradients: 4096 as f32, the rest as bf16 = 3.56 MiB; float32 sends 7.11 MiB in 2 buckets.
  EXPECT_EQ(count_of(launch.out,
                     "allreduce        3.56 MiB a step in 3 bucket(s) of up to 4.00 MiB as bfloat16 after the first"),
            1)
      << describe(launch);
  expect_records(1, 2, "strong", 32);
}

// --overlap on and --bucket-bytes: the table and the record say what was measured (the buckets, overlap on), so
// records of both settings never pass for each other.
TEST_F(BenchTest, OverlapAndBucketBytesAreInTheTableAndTheRecord) {
  const Launch launch = bench(2, {"--model", "mlp", "--batch-size", "32", "--warmup-steps", "1", "--steps", "3",
                                  "--overlap", "on", "--bucket-bytes", "1048576", "--json", "bench.jsonl"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  expect_table(launch);
  // 1,863,690 parameters: 7,454,760 bytes in 8 buckets of up to 1 MiB.
  EXPECT_EQ(count_of(launch.out, "7.11 MiB a step in 8 bucket(s) of up to 1.00 MiB"), 1) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "overlap          on:"), 1) << describe(launch);
  expect_records(1, 2, "strong", 32, {"--overlap", "on", "--bucket-bytes", "1048576"});
}

TEST_F(BenchTest, AJobFilesModelLossAndOptimizer) {
  write_text(dir_ / "job.pbtxt", R"(model {
  input_dim: 20
  layers { dense { units: 8 activation: "tanh" } }
  layers { dense { units: 3 } }
}
loss: "mse"
optimizer { adam { } }
)");
  const Launch launch =
      bench(2, {"job.pbtxt", "--batch-size", "9", "--warmup-steps", "0", "--steps", "2", "--json", "bench.jsonl"});
  ASSERT_EQ(launch.exit_code, 0) << describe(launch);
  EXPECT_EQ(count_of(launch.out, "shardfit bench: job.pbtxt (20-8-3, 195 parameters, adam, mse)"), 1)
      << describe(launch);
  EXPECT_EQ(count_of(launch.out, "9 global, 4-5 per rank"), 1) << describe(launch);
  expect_records(1, 2, "strong", 9);
}

// The convnet preset and a job whose model has input_shape alone (no input_dim): the synthetic data takes the
// model's input shape, at 1 and 2 ranks.
TEST_F(BenchTest, ImageModelsRunFromTheirInputShape) {
  const Launch preset = bench(1, {"--model", "convnet", "--batch-size", "8", "--warmup-steps", "1", "--steps", "2"});
  ASSERT_EQ(preset.exit_code, 0) << describe(preset);
  EXPECT_EQ(count_of(preset.out, "shardfit bench: convnet (28x28x1-c32-p-c64-p-128-10, 225034 parameters, sgd"), 1)
      << describe(preset);
  write_text(dir_ / "image.pbtxt", R"(model {
  input_shape: [6, 5, 2]
  layers { conv2d { filters: 3 kernel_size: 3 padding: "same" activation: "relu" } }
  layers { max_pooling2d { } }
  layers { flatten { } }
  layers { dense { units: 4 activation: "softmax" } }
}
loss: "sparse_categorical_crossentropy"
)");
  const Launch job =
      bench(2, {"image.pbtxt", "--batch-size", "6", "--warmup-steps", "0", "--steps", "2", "--json", "bench.jsonl"});
  ASSERT_EQ(job.exit_code, 0) << describe(job);
  // (3*3*2*3 + 3) + (3*2*3*4 + 4): "same" keeps 6x5, the pooling gives 3x2
  EXPECT_EQ(count_of(job.out, "shardfit bench: image.pbtxt (6x5x2-c3-p-4, 133 parameters"), 1) << describe(job);
  expect_records(1, 2, "strong", 6);
}

TEST_F(BenchTest, BadFlagsAndModelsAreRefusedWithOneMessage) {
  struct Case {
    std::vector<std::string> flags;
    std::string says;
  };
  write_text(dir_ / "no_input_dim.pbtxt", "model { layers { dense { units: 2 } } } loss: \"mse\"\n");
  const std::vector<Case> cases = {
      {{}, "bench needs a model: expected `shardfit bench --model mlp|wide|convnet` or a job file"},
      {{"no_input_dim.pbtxt", "--model", "mlp"}, "bench got both a job file ('no_input_dim.pbtxt') and --model mlp"},
      {{"--model", "huge"}, "--model huge: no such preset: expected mlp (784-1024-1024-10), wide"},
      {{"--model", "mlp", "--mode", "sideways"}, "--mode sideways: expected strong (a fixed global batch) or weak"},
      {{"--model", "mlp", "--steps", "0"}, "--steps 0: expected an integer >= 1"},
      {{"--model", "mlp", "--warmup-steps", "-1"}, "--warmup-steps -1: expected an integer >= 0"},
      {{"--model", "mlp", "--batch-size", "1"},
       "--batch-size 1 in strong scaling at 2 ranks leaves a rank without samples"},
      {{"--model", "mlp", "--optimizer", "lbfgs"}, "--optimizer lbfgs: expected sgd, adam or rmsprop"},
      {{"--model", "mlp", "--epochs", "3"}, "unknown flag '--epochs' for bench"},
      {{"--model", "mlp", "--reduce-dtype", "float16"}, "--reduce-dtype float16: expected float32 or bfloat16"},
      {{"--model", "mlp", "--json", "missing/bench.jsonl"}, "the folder missing does not exist"},
      {{"no_input_dim.pbtxt"}, "no_input_dim.pbtxt: model.input_dim is not set"},
      {{"--model", "mlp", "--bucket-bytes", "10"}, "--bucket-bytes 10: expected a multiple of 4"},
      {{"--model", "mlp", "--overlap", "maybe"}, "--overlap maybe: expected on or off"},
  };
  for (const Case& c : cases) {
    const std::string message = expect_refused(2, c.flags);
    EXPECT_NE(message.find(c.says), std::string::npos) << "expected '" << c.says << "' in\n" << message;
  }
  EXPECT_FALSE(fs::exists(dir_ / "missing"));
}

}  // namespace
