// Checkpoint files: the CRC-32C catches every flipped bit and a truncation, old files without a checksum are
// refused by name, and a checkpoint whose checksum is right but whose fields make no sense for the run (hand-edited
// and re-summed, or written wrong) is refused naming the field, the value and the range expected.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "dist/checkpoint_io.h"
#include "dist/crc32c.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/model_factory.h"
#include "tests/support/temp_dir.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kParams = 6;

CheckpointExpectations expectations() {
  CheckpointExpectations e;
  e.epochs = 5;
  e.train_count = 75;  // batch 8: 10 steps per epoch, the last of 3 samples (2 on rank 0, 1 on rank 1)
  e.global_batch = 8;
  e.world_size = 2;
  e.fingerprint = "the job";
  e.param_count = kParams;
  e.optimizer_kind = "adam";
  e.slots = {{"m", kParams}, {"v", kParams}};
  e.sums_per_rank = 3;  // loss, accuracy, count
  return e;
}

// A checkpoint a run matching expectations() could have written: epoch 2, step 4 of 10.
proto::Checkpoint valid_checkpoint() {
  proto::Checkpoint c;
  c.set_epoch(2);
  c.set_step_in_epoch(4);
  c.set_global_step(24);
  for (int64_t i = 0; i < kParams; ++i) c.add_parameters(0.25F * static_cast<float>(i) - 0.5F);
  auto* o = c.mutable_optimizer();
  o->set_kind("adam");
  o->set_iterations(24);
  o->set_learning_rate(0.001F);
  for (const char* name : {"m", "v"}) {
    auto* slot = o->add_slots();
    slot->set_name(name);
    for (int64_t i = 0; i < kParams; ++i) slot->add_values(0.01F * static_cast<float>(i));
  }
  c.mutable_history()->add_epochs()->set_epoch(0);
  c.mutable_history()->add_epochs()->set_epoch(1);
  for (double v : {3.5, 2.0, 16.0, 3.25, 1.0, 16.0}) c.add_rank_epoch_sums(v);
  c.set_world_size(2);
  c.set_job_fingerprint("the job");
  c.set_seed(1337);
  return c;
}

std::string range_error(const proto::Checkpoint& c) {
  try {
    check_checkpoint(c, expectations(), "ckpt/checkpoint.pb");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string decode_error(const std::string& bytes) {
  try {
    decode_checkpoint(bytes, "ckpt/checkpoint.pb");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Crc32c, StandardCheckValueAndIncrementalUse) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283U);
  EXPECT_EQ(crc32c(""), 0U);
  // Lengths around the 8-byte rounds: the result does not depend on how the input is split.
  const std::string text = "shardfit checkpoints are checked before they are trusted";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    const std::string_view all(text);
    EXPECT_EQ(crc32c(all.substr(cut), crc32c(all.substr(0, cut))), crc32c(all)) << cut;
  }
}

TEST(CheckpointFile, RoundTripsAndStartsWithItsMagic) {
  const proto::Checkpoint c = valid_checkpoint();
  const std::string bytes = encode_checkpoint(c);
  EXPECT_TRUE(looks_like_checkpoint(bytes));
  EXPECT_EQ(bytes.substr(1, 6), "SFCKPT");
  EXPECT_EQ(decode_checkpoint(bytes, "x").SerializeAsString(), c.SerializeAsString());
  EXPECT_EQ(encode_checkpoint(c), bytes) << "deterministic";
  EXPECT_FALSE(looks_like_checkpoint(std::string("PK\x03\x04\x14\0\0\0\0", 9))) << "an .npz";
  EXPECT_FALSE(looks_like_checkpoint(c.SerializeAsString())) << "a bare Checkpoint";
}

TEST(CheckpointFile, EveryFlippedBitIsRefusedNamingTheFile) {
  const std::string bytes = encode_checkpoint(valid_checkpoint());
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = bytes;
      flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
      const std::string message = decode_error(flipped);
      ASSERT_TRUE(contains(message, "checkpoint 'ckpt/checkpoint.pb'"))
          << "byte " << i << " bit " << bit << ": " << message;
    }
  }
  // A flip inside the payload is a checksum mismatch, said as such.
  std::string flipped = bytes;
  flipped[bytes.size() - 20] ^= 0x10;
  EXPECT_TRUE(contains(decode_error(flipped), "is damaged (stored CRC-32C 0x")) << decode_error(flipped);
}

TEST(CheckpointFile, TruncatedForeignAndOldFilesAreRefused) {
  const std::string bytes = encode_checkpoint(valid_checkpoint());
  for (size_t keep : {size_t{0}, size_t{5}, size_t{12}, bytes.size() / 2, bytes.size() - 1}) {
    EXPECT_NE(decode_error(bytes.substr(0, keep)), "no error") << keep;
  }
  const std::string old = decode_error(valid_checkpoint().SerializeAsString());
  EXPECT_TRUE(contains(old, "was written by an earlier shardfit, without an integrity checksum")) << old;
  const std::string zip = decode_error(std::string("PK\x03\x04 not a checkpoint", 21));
  EXPECT_TRUE(contains(zip, "is not a shardfit checkpoint")) << zip;
}

TEST(CheckpointFile, AnotherVersionATruncatedAndADamagedFileAreToldApart) {
  const std::string bytes = encode_checkpoint(valid_checkpoint());
  ASSERT_EQ(bytes.substr(7, 2), "02") << "the format version this shardfit writes";

  // Another format version: named with the one expected (the checksum covers the contents only, so it still fits).
  // Version 01 is the one before the callbacks' state became typed messages.
  std::string v1 = bytes;
  v1[8] = '1';
  const std::string version = decode_error(v1);
  EXPECT_TRUE(contains(version,
                       "checkpoint 'ckpt/checkpoint.pb' is a checkpoint of format version '01': "
                       "expected version '02'"))
      << version;

  // Cut anywhere after its first bytes, a checkpoint is called truncated, never "not a checkpoint".
  for (size_t keep = 2; keep < bytes.size(); ++keep) {
    const std::string message = decode_error(bytes.substr(0, keep));
    ASSERT_TRUE(contains(message, "checkpoint 'ckpt/checkpoint.pb' is truncated (" + std::to_string(keep) + " bytes"))
        << keep << ": " << message;
  }
  const std::string half = decode_error(bytes.substr(0, bytes.size() / 2));
  EXPECT_TRUE(contains(half, "its header announces")) << half;

  // Damaged: a payload byte changed (checksum mismatch), or bytes after the end the header announces.
  std::string flipped = bytes;
  flipped[bytes.size() - 20] ^= 0x01;
  EXPECT_TRUE(contains(decode_error(flipped), "is damaged (stored CRC-32C 0x")) << decode_error(flipped);
  const std::string longer = decode_error(bytes + "tail");
  EXPECT_TRUE(contains(longer, "is damaged (4 bytes follow the end its header announces")) << longer;

  // Not a checkpoint at all.
  const std::string text = decode_error("these are notes, not a checkpoint");
  EXPECT_TRUE(contains(text, "is not a shardfit checkpoint")) << text;
  EXPECT_FALSE(contains(text, "truncated")) << text;
}

TEST(CheckpointFile, FolderAndEmptyFileAreNamedForWhatTheyAre) {
  testing::TempDir dir("ckpt_io");
  const fs::path folder = dir.path() / "checkpoint.pb";
  fs::create_directories(folder);
  try {
    read_checkpoint_bytes(folder);
    ADD_FAILURE() << "a folder was read";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "is a folder")) << e.what();
    EXPECT_FALSE(contains(e.what(), "empty")) << e.what();
  }
  const fs::path empty = dir.path() / "empty.pb";
  std::ofstream(empty).close();
  try {
    read_checkpoint_bytes(empty);
    ADD_FAILURE() << "an empty file was read";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "is empty")) << e.what();
  }
}

TEST(CheckpointFile, WrittenIntoANewFolderAndReadBack) {
  testing::TempDir dir("ckpt_io");
  const fs::path path = dir.path() / "a" / "b" / "checkpoint.pb";
  write_checkpoint_file(path, valid_checkpoint());
  const proto::Checkpoint back = decode_checkpoint(read_checkpoint_bytes(path), path);
  EXPECT_EQ(back.SerializeAsString(), valid_checkpoint().SerializeAsString());
}

TEST(CheckpointFile, AFailedWriteBlamesTheCheckpointFolderNotTheHistory) {
  // A file size limit makes write() fail (EFBIG) as a full disk would (ENOSPC): the same path and the same hint.
  testing::TempDir dir("ckpt_io");
  const fs::path path = dir.path() / "checkpoints" / "checkpoint.pb";
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit small = saved;
  small.rlim_cur = 64;
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  std::string hint;
  try {
    write_checkpoint_file(path, valid_checkpoint());
  } catch (const Error& e) {
    message = e.what();
    hint = e.hint();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(contains(message, "cannot write")) << message;
  EXPECT_TRUE(contains(hint, "check free space and quota in " + path.parent_path().string())) << hint;
  EXPECT_FALSE(contains(hint, "history")) << hint;
  EXPECT_FALSE(fs::exists(path)) << "nothing half-written under the checkpoint's name";
}

TEST(CheckpointRanges, AValidCheckpointPasses) {
  EXPECT_EQ(range_error(valid_checkpoint()), "no error");
  proto::Checkpoint end = valid_checkpoint();  // the end of the last epoch
  end.set_epoch(5);
  end.set_step_in_epoch(0);
  end.set_global_step(50);
  for (int i = 0; i < end.rank_epoch_sums_size(); ++i) end.set_rank_epoch_sums(i, 0.0);  // a new epoch: no sums yet
  EXPECT_EQ(range_error(end), "no error");
  proto::Checkpoint signal = valid_checkpoint();  // a signal at the last step: the whole epoch trained
  signal.set_step_in_epoch(10);
  signal.set_global_step(30);
  signal.set_rank_epoch_sums(2, 9 * 4 + 2);  // 9 full batches of 4 per rank, then 2 of the last 3 samples
  signal.set_rank_epoch_sums(5, 9 * 4 + 1);
  EXPECT_EQ(range_error(signal), "no error");
  proto::Checkpoint zero_rate = valid_checkpoint();  // a cosine schedule ends at 0
  zero_rate.mutable_optimizer()->set_learning_rate(0.0F);
  EXPECT_EQ(range_error(zero_rate), "no error");
}

// Each case edits one field of a valid checkpoint; the error must name it, its value and what was expected.
struct Edit {
  const char* name;
  std::function<void(proto::Checkpoint&)> apply;
  const char* expected_text;
};

TEST(CheckpointRanges, EachFieldThatDrivesTheLoopIsChecked) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Edit> edits = {
      {"negative epoch", [](auto& c) { c.set_epoch(-1); }, "field epoch = -1: expected epochs completed, 0 to 5"},
      {"epoch past the run", [](auto& c) { c.set_epoch(6); }, "field epoch = 6: expected"},
      {"step past the epoch", [](auto& c) { c.set_step_in_epoch(11); },
       "field step_in_epoch = 11: expected steps of epoch 3 completed, 0 to 10"},
      {"negative step", [](auto& c) { c.set_step_in_epoch(-3); }, "field step_in_epoch = -3"},
      {"step after the last epoch",
       [](auto& c) {
         c.set_epoch(5);
         c.set_step_in_epoch(1);
         c.set_global_step(51);
       },
       "field step_in_epoch = 1: expected steps of epoch 6 completed, 0 to 0"},
      {"global step", [](auto& c) { c.set_global_step(7); }, "field global_step = 7: expected 24 (epoch 2 x 10"},
      {"more history than epochs", [](auto& c) { c.mutable_history()->add_epochs()->set_epoch(2); },
       "field history.epochs (records) = 3"},
      {"NaN learning rate", [nan](auto& c) { c.mutable_optimizer()->set_learning_rate(nan); },
       "field optimizer.learning_rate = nan: expected a finite number >= 0"},
      {"negative learning rate", [](auto& c) { c.mutable_optimizer()->set_learning_rate(-0.5F); },
       "field optimizer.learning_rate = -0.5"},
      {"negative iterations", [](auto& c) { c.mutable_optimizer()->set_iterations(-2); },
       "field optimizer.iterations = -2: expected 0 to 24"},
      {"iterations past the steps", [](auto& c) { c.mutable_optimizer()->set_iterations(25); },
       "field optimizer.iterations = 25"},
      {"optimizer kind", [](auto& c) { c.mutable_optimizer()->set_kind("sgd"); }, "field optimizer.kind = sgd"},
      {"parameter count", [](auto& c) { c.add_parameters(1.0F); }, "field parameters (count) = 7: expected 6"},
      {"NaN parameter", [nan](auto& c) { c.set_parameters(3, nan); }, "field parameters[3] = nan: expected finite"},
      {"infinite parameter", [](auto& c) { c.set_parameters(0, INFINITY); }, "field parameters[0] = inf"},
      {"slot count", [](auto& c) { c.mutable_optimizer()->mutable_slots()->RemoveLast(); },
       "field optimizer.slots (count) = 1: expected 2"},
      {"slot name", [](auto& c) { c.mutable_optimizer()->mutable_slots(1)->set_name("w"); },
       "field optimizer.slots[1].name = w"},
      {"slot size", [](auto& c) { c.mutable_optimizer()->mutable_slots(0)->add_values(0.0F); },
       "field optimizer.slots[0].values (count) = 7: expected 6"},
      {"NaN slot value", [nan](auto& c) { c.mutable_optimizer()->mutable_slots(1)->set_values(5, nan); },
       "field optimizer.slots[1].values[5] = nan"},
      {"epoch sums count", [](auto& c) { c.add_rank_epoch_sums(0.0); },
       "field rank_epoch_sums (count) = 7: expected 6 (2 ranks x 3 sums"},
      {"NaN epoch sum", [](auto& c) { c.set_rank_epoch_sums(1, std::nan("")); }, "field rank_epoch_sums[1] = nan"},
      {"negative sample count", [](auto& c) { c.set_rank_epoch_sums(5, -16.0); },
       "field rank_epoch_sums[5] = -16: expected rank 1's sample count"},
      {"fractional sample count", [](auto& c) { c.set_rank_epoch_sums(2, 15.5); }, "field rank_epoch_sums[2] = 15.5"},
      {"zeroed sample counts",
       [](auto& c) {
         c.set_rank_epoch_sums(2, 0.0);
         c.set_rank_epoch_sums(5, 0.0);
       },
       "field rank_epoch_sums (sample counts of ranks 0 to 1, summed) = 0: expected 32, the samples of steps 1 to 4 "
       "of epoch 3 trained (75 samples per epoch, batch_size 8)"},
      {"the last step with a full epoch's counts missing",
       [](auto& c) {
         c.set_step_in_epoch(10);
         c.set_global_step(30);
       },
       "field rank_epoch_sums (sample counts of ranks 0 to 1, summed) = 32: expected 75"},
      {"counts moved between ranks",
       [](auto& c) {
         c.set_rank_epoch_sums(2, 20.0);
         c.set_rank_epoch_sums(5, 12.0);
       },
       "field rank_epoch_sums[2] = 20: expected 16, rank 0's share of the samples of steps 1 to 4 of epoch 3"},
      {"counts at an epoch boundary",
       [](auto& c) {
         c.set_step_in_epoch(0);
         c.set_global_step(20);
         c.mutable_optimizer()->set_iterations(20);
       },
       "expected 0, the samples of no step of epoch 3 trained yet"},
      {"rank count", [](auto& c) { c.set_world_size(4); }, "was written by 4 ranks, this run has 2"},
      {"another job", [](auto& c) { c.set_job_fingerprint("other"); }, "belongs to a different job"},
  };
  for (const Edit& edit : edits) {
    proto::Checkpoint c = valid_checkpoint();
    edit.apply(c);
    const std::string message = range_error(c);
    EXPECT_TRUE(contains(message, "checkpoint 'ckpt/checkpoint.pb'")) << edit.name << ": " << message;
    EXPECT_TRUE(contains(message, edit.expected_text)) << edit.name << ": " << message;
  }
}

TEST(CheckpointWeights, AModelTakesTheParametersOfACheckpointWrittenForIt) {
  const proto::Job job = parse_job_text(R"(model { layers { dense { units: 3 } } } loss: "mse")", "w.pbtxt");
  auto model = build_model(job, 2);
  proto::Checkpoint c;
  for (int i = 0; i < 9; ++i) c.add_parameters(static_cast<float>(i) + 0.5F);
  c.set_job_fingerprint(model->summary() + "loss mse; optimizer adam; ...");
  load_checkpoint_weights(encode_checkpoint(c), "ckpt.pb", *model);
  EXPECT_EQ(model->parameters()[8], 8.5F);

  auto other = build_model(parse_job_text(R"(model { layers { dense { units: 4 } } } loss: "mse")", "w.pbtxt"), 2);
  try {
    load_checkpoint_weights(encode_checkpoint(c), "ckpt.pb", *other);
    ADD_FAILURE() << "the weights of another model were loaded";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "holds the weights of a different model")) << e.what();
  }
}

}  // namespace
}  // namespace shardfit
