// Checkpoint files: the CRC-32C catches every flipped bit and a truncation, old files without a checksum and files
// of another format version are refused by name, and the weights of a checkpoint load into the model it was
// written for only. The range checks of a resume are tests/dist/train/test_checkpoint_checks.cpp.
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

#include "dist/io/checkpoint_file.h"
#include "dist/io/crc32c.h"
#include "kernels/error.h"
#include "kernels/job_file.h"
#include "kernels/model_factory.h"
#include "tests/support/checkpoint_sample.h"
#include "tests/support/temp_dir.h"
#include "tests/support/text.h"
namespace shardfit {
namespace {

namespace fs = std::filesystem;

std::string decode_error(const std::string& bytes) {
  try {
    decode_checkpoint(bytes, "ckpt/checkpoint.pb");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

using testing::contains;

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
  const proto::Checkpoint c = sample_checkpoint();
  const std::string bytes = encode_checkpoint(c);
  EXPECT_TRUE(looks_like_checkpoint(bytes));
  EXPECT_EQ(bytes.substr(1, 6), "SFCKPT");
  EXPECT_EQ(decode_checkpoint(bytes, "x").SerializeAsString(), c.SerializeAsString());
  EXPECT_EQ(encode_checkpoint(c), bytes) << "deterministic";
  EXPECT_FALSE(looks_like_checkpoint(std::string("PK\x03\x04\x14\0\0\0\0", 9))) << "an .npz";
  EXPECT_FALSE(looks_like_checkpoint(c.SerializeAsString())) << "a bare Checkpoint";
}

TEST(CheckpointFile, EveryFlippedBitIsRefusedNamingTheFile) {
  const std::string bytes = encode_checkpoint(sample_checkpoint());
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
  const std::string bytes = encode_checkpoint(sample_checkpoint());
  for (size_t keep : {size_t{0}, size_t{5}, size_t{12}, bytes.size() / 2, bytes.size() - 1}) {
    EXPECT_NE(decode_error(bytes.substr(0, keep)), "no error") << keep;
  }
  const std::string old = decode_error(sample_checkpoint().SerializeAsString());
  EXPECT_TRUE(contains(old, "was written by an earlier shardfit, without an integrity checksum")) << old;
  const std::string zip = decode_error(std::string("PK\x03\x04 not a checkpoint", 21));
  EXPECT_TRUE(contains(zip, "is not a shardfit checkpoint")) << zip;
}

TEST(CheckpointFile, AnotherVersionATruncatedAndADamagedFileAreToldApart) {
  const std::string bytes = encode_checkpoint(sample_checkpoint());
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
  write_checkpoint_file(path, sample_checkpoint());
  const proto::Checkpoint back = decode_checkpoint(read_checkpoint_bytes(path), path);
  EXPECT_EQ(back.SerializeAsString(), sample_checkpoint().SerializeAsString());
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
    write_checkpoint_file(path, sample_checkpoint());
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

TEST(CheckpointWeights, AModelTakesTheParametersOfACheckpointWrittenForIt) {
  const proto::Job job = parse_job_text(R"(model { layers { dense { units: 3 } } } loss: "mse")", "w.pbtxt");
  auto model = build_model(job, 2);
  proto::Checkpoint c;
  for (int i = 0; i < 9; ++i) c.add_parameters(static_cast<float>(i) + 0.5F);
  c.set_job_fingerprint(model->architecture() + "loss mse; optimizer adam; ...");
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
