// Checkpoint files: encode / decode with the CRC-32C beside the payload, and the range checks of a resume.
//
// Why both: the checksum catches what the disk or a copy did (a flipped bit, a truncated transfer); the range
// checks catch what no checksum can, a file that was written wrong or edited and re-summed. Either way the
// loop would otherwise index past its buffers or train on NaN without a word.
#include "dist/checkpoint_io.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "dist/crc32c.h"
#include "dist/history_writer.h"
#include "dist/sharding.h"
#include "kernels/error.h"
#include "kernels/model.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

// The layout encode_checkpoint writes, a deterministic CheckpointFile: field 1 (fixed64) the magic, field 2
// (fixed32) the CRC-32C, absent when 0 as proto3 omits zeros, field 3 (length-delimited) the Checkpoint. Read by
// hand rather than by ParseFromArray so that a file cut short, a file of another format version and a damaged one
// are told apart: the remedy differs (another copy, another shardfit, or neither).
constexpr char kFieldOneFixed64Tag = 0x09;         // field 1, wire type 1 (64-bit)
constexpr char kFieldTwoFixed32Tag = 0x15;         // field 2, wire type 5 (32-bit)
constexpr char kFieldThreeBytesTag = 0x1a;         // field 3, wire type 2 (length-delimited)
constexpr std::string_view kMagicName = "SFCKPT";  // the magic's first six bytes; the last two are the version
constexpr size_t kHeaderSize = 9;                  // the tag and the eight bytes of the magic

std::string quoted(const fs::path& path) { return cat("checkpoint '", path.string(), "'"); }

// "checkpoint 'P': field F = V: expected E"
template <typename Value>
[[noreturn]] void fail_field(const fs::path& path, const std::string& field, const Value& value,
                             const std::string& expected, const std::string& hint = {}) {
  SF_FAIL(cat(quoted(path), ": field ", field, " = ", value, ": expected ", expected), hint);
}

// The first non-finite value, or -1.
template <typename Values>
int64_t first_non_finite(const Values& values) {
  int64_t i = 0;
  for (const auto v : values) {
    if (!std::isfinite(v)) return i;
    ++i;
  }
  return -1;
}

template <typename Values>
void check_finite(const Values& values, const std::string& field, const fs::path& path) {
  const int64_t bad = first_non_finite(values);
  if (bad >= 0) {
    fail_field(path, cat(field, "[", bad, "]"), values[static_cast<int>(bad)], "finite values",
               "the run had diverged when this checkpoint was written: resume from an earlier one, or start afresh");
  }
}

// Rank `rank`'s samples in the first `steps_done` steps of an epoch: every step but the last holds a full global
// batch, split alike each time; the last holds the remainder (ShardPlan's rule, without a loop over the steps).
int64_t rank_share(const CheckpointExpectations& e, int rank, int64_t steps_done) {
  const ShardPlan plan(e.train_count, e.global_batch, e.world_size, rank);
  if (steps_done <= 0) return 0;
  const int64_t full_steps = std::min(steps_done, plan.steps() - 1);
  int64_t samples = full_steps > 0 ? full_steps * plan.slice(0).count : 0;
  if (steps_done == plan.steps()) samples += plan.slice(plan.steps() - 1).count;
  return samples;
}

// The epoch's loss and metrics are the saved sums divided by the saved counts: counts that do not match the steps
// already trained (zeroed by hand, say) would give a NaN or a wrong epoch average with exit 0. step_in_epoch is
// already known to be in range here, and every count a whole number >= 0.
void check_sample_counts(const proto::Checkpoint& c, const CheckpointExpectations& e, const fs::path& path) {
  if (e.sums_per_rank == 0) return;
  const int64_t steps_done = c.step_in_epoch();
  const std::string steps_text = steps_done == 0
                                     ? cat("no step of epoch ", c.epoch() + 1, " trained yet")
                                     : cat("steps 1 to ", steps_done, " of epoch ", c.epoch() + 1, " trained (",
                                           e.train_count, " samples per epoch, batch_size ", e.global_batch, ")");
  const char* hint = "the file was edited or written wrong: restore it from a copy, or move it away to start afresh";
  const auto count_at = [&](int rank) {
    return c.rank_epoch_sums(static_cast<int>((static_cast<size_t>(rank) + 1) * e.sums_per_rank - 1));
  };
  double total = 0.0;
  for (int r = 0; r < e.world_size; ++r) total += count_at(r);
  // steps_done <= steps, so steps_done * global_batch < train_count + global_batch: no overflow.
  const int64_t expected_total = std::min(steps_done * e.global_batch, e.train_count);
  if (total != static_cast<double>(expected_total)) {
    fail_field(path, cat("rank_epoch_sums (sample counts of ranks 0 to ", e.world_size - 1, ", summed)"), total,
               cat(expected_total, ", the samples of ", steps_text), hint);
  }
  for (int r = 0; r < e.world_size; ++r) {
    const int64_t expected = rank_share(e, r, steps_done);
    if (count_at(r) != static_cast<double>(expected)) {
      fail_field(path, cat("rank_epoch_sums[", (static_cast<size_t>(r) + 1) * e.sums_per_rank - 1, "]"), count_at(r),
                 cat(expected, ", rank ", r, "'s share of the samples of ", steps_text), hint);
    }
  }
}

}  // namespace

std::string encode_checkpoint(const proto::Checkpoint& checkpoint) {
  proto::CheckpointFile file;
  file.set_magic(kCheckpointMagic);
  file.set_checkpoint(serialize_deterministic(checkpoint));
  file.set_crc32c(crc32c(file.checkpoint()));
  return serialize_deterministic(file);
}

namespace {

// The header this shardfit writes: the tag, then the magic (fixed64 is little-endian on the wire, as on x86-64).
std::string current_header() {
  std::string header(kHeaderSize, kFieldOneFixed64Tag);
  std::memcpy(header.data() + 1, &kCheckpointMagic, sizeof kCheckpointMagic);
  return header;
}

// Two version bytes as text when they are printable ('01'), else in hex.
std::string shown_version(std::string_view version) {
  const bool printable =
      std::all_of(version.begin(), version.end(), [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)); });
  if (printable) return cat("'", version, "'");
  std::ostringstream hex;
  hex << "0x" << std::hex;
  for (const char ch : version) {
    hex << (static_cast<unsigned>(static_cast<unsigned char>(ch)) >> 4U)
        << (static_cast<unsigned>(static_cast<unsigned char>(ch)) & 15U);
  }
  return hex.str();
}

[[noreturn]] void fail_truncated(const fs::path& path, size_t size, const std::string& missing) {
  SF_FAIL(cat(quoted(path), " is truncated (", size, " bytes: ", missing, "): expected the whole file as fit wrote it"),
          "the write or a copy was cut short: restore it from a copy, or move it away to start afresh");
}

[[noreturn]] void fail_damaged(const fs::path& path, const std::string& detail) {
  SF_FAIL(cat(quoted(path), " is damaged (", detail, "): expected the file as fit wrote it"),
          "restore it from a copy, or move it away to start afresh");
}

// Neither this format nor another version of it: an earlier shardfit's bare Checkpoint, or another kind of file.
[[noreturn]] void fail_not_a_checkpoint(std::string_view bytes, const fs::path& path) {
  proto::Checkpoint legacy;
  const bool old_format = legacy.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) &&
                          legacy.world_size() > 0 && !legacy.job_fingerprint().empty();
  SF_CHECK(!old_format,
           cat(quoted(path),
               " was written by an earlier shardfit, without an integrity checksum: expected a "
               "checkpoint with one (it cannot be told from a damaged file)"),
           "move it away or delete it, and start the fit afresh");
  SF_FAIL(cat(quoted(path), " is not a shardfit checkpoint (", bytes.size(),
              " bytes that do not start with the checkpoint header): expected a checkpoint.pb written by "
              "shardfit fit"));
}

}  // namespace

bool looks_like_checkpoint(std::string_view bytes) {
  return bytes.size() > kMagicName.size() && bytes[0] == kFieldOneFixed64Tag && bytes.substr(1).starts_with(kMagicName);
}

proto::Checkpoint decode_checkpoint(std::string_view bytes, const fs::path& path) {
  const std::string header = current_header();
  const size_t size = bytes.size();
  // 1. Which file: this format, another version of it, the start of one, or something else.
  if (!looks_like_checkpoint(bytes)) {
    if (size >= 2 && std::string_view(header).starts_with(bytes)) {
      fail_truncated(path, size, cat("the checkpoint header alone takes ", kHeaderSize));
    }
    fail_not_a_checkpoint(bytes, path);
  }
  if (size < kHeaderSize) fail_truncated(path, size, cat("the checkpoint header alone takes ", kHeaderSize));
  const std::string_view version = bytes.substr(1 + kMagicName.size(), 2);
  const std::string_view expected_version = std::string_view(header).substr(1 + kMagicName.size(), 2);
  SF_CHECK(version == expected_version,
           cat(quoted(path), " is a checkpoint of format version ", shown_version(version), ": expected version ",
               shown_version(expected_version), ", the one this shardfit reads and writes"),
           "resume it with the shardfit that wrote it, or move it away to start afresh");

  // 2. The checksum and the payload's length, as the header states them.
  size_t at = kHeaderSize;
  uint32_t stored = 0;
  if (at < size && bytes[at] == kFieldTwoFixed32Tag) {
    if (size - at < 1 + sizeof stored) fail_truncated(path, size, "it ends inside the checksum");
    std::memcpy(&stored, bytes.data() + at + 1, sizeof stored);
    at += 1 + sizeof stored;
  }
  if (at == size) fail_truncated(path, size, "it ends after the header, before the checkpoint itself");
  if (bytes[at] != kFieldThreeBytesTag) {
    std::ostringstream detail;
    detail << "byte " << at << " is 0x" << std::hex << static_cast<unsigned>(static_cast<unsigned char>(bytes[at]))
           << " where the checkpoint's length belongs";
    fail_damaged(path, detail.str());
  }
  ++at;
  uint64_t length = 0;
  for (unsigned shift = 0;; shift += 7) {
    if (at == size) fail_truncated(path, size, "it ends inside the checkpoint's length");
    if (shift > 63) fail_damaged(path, cat("the checkpoint's length at byte ", at, " runs past 10 bytes"));
    const auto byte = static_cast<unsigned char>(bytes[at++]);
    length |= static_cast<uint64_t>(byte & 0x7FU) << shift;
    if ((byte & 0x80U) == 0) break;
  }
  if (length > size - at) {
    fail_truncated(
        path, size,
        cat("its header announces ", length, " bytes of checkpoint from byte ", at, ", ", size - at, " are there"));
  }
  if (length < size - at) {
    fail_damaged(path, cat(size - at - length, " bytes follow the end its header announces, byte ", at + length));
  }

  // 3. The contents against the checksum, then the contents themselves.
  const std::string_view payload = bytes.substr(at);
  const uint32_t actual = crc32c(payload);
  if (actual != stored) {
    std::ostringstream detail;
    detail << std::hex << "stored CRC-32C 0x" << stored << ", contents give 0x" << actual;
    fail_damaged(path, detail.str());
  }
  proto::Checkpoint checkpoint;
  SF_CHECK(checkpoint.ParseFromArray(payload.data(), static_cast<int>(payload.size())),
           cat(quoted(path),
               ": its checksum matches but the contents are not a Checkpoint: expected one written by "
               "shardfit fit"));
  return checkpoint;
}

std::string read_checkpoint_bytes(const fs::path& path) {
  std::error_code error;
  SF_CHECK(!fs::is_directory(path, error), cat(quoted(path), " is a folder: expected the file written by shardfit fit"),
           "remove or rename the folder; checkpoints are written as <checkpoint_dir>/checkpoint.pb");
  std::ifstream in(path, std::ios::binary);
  SF_CHECK(in.is_open(), cat("cannot read ", quoted(path), ": ", std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  SF_CHECK(!in.bad(), cat("cannot read ", quoted(path), ": ", std::strerror(errno)));
  std::string bytes = buffer.str();
  SF_CHECK(!bytes.empty(), cat(quoted(path), " is empty: expected a checkpoint written by shardfit fit"),
           "move it away or delete it to start afresh");
  return bytes;
}

void write_checkpoint_file(const fs::path& path, const proto::Checkpoint& checkpoint) {
  const std::string bytes = encode_checkpoint(checkpoint);
  if (path.has_parent_path()) {
    std::error_code error;
    fs::create_directories(path.parent_path(), error);
    SF_CHECK(!error, cat("cannot create the checkpoint folder ", path.parent_path().string(), ": ", error.message()),
             "set outputs.checkpoint_dir to a folder this job may write");
  }
  write_file_atomically(path, bytes);
}

void check_checkpoint(const proto::Checkpoint& c, const CheckpointExpectations& e, const fs::path& path) {
  SF_CHECK(c.world_size() == e.world_size,
           cat(quoted(path), " was written by ", c.world_size(), " ranks, this run has ", e.world_size),
           "resume with the same rank count (the continuation is exact only then)");
  SF_CHECK(c.job_fingerprint() == e.fingerprint,
           cat(quoted(path), " belongs to a different job (model, loss, optimizer, data, batch size or seed changed)"),
           "delete the checkpoint directory to start afresh, or resume with the original job");

  // Where the loop continues.
  if (c.epoch() < 0 || c.epoch() > e.epochs) {
    fail_field(path, "epoch", c.epoch(), cat("epochs completed, 0 to ", e.epochs, " (the run's epochs)"),
               c.epoch() > e.epochs ? "raise --epochs to continue past the epochs already trained" : "");
  }
  const int64_t steps_per_epoch = ShardPlan(e.train_count, e.global_batch, e.world_size, 0).steps();
  const int64_t last_step = c.epoch() == e.epochs ? 0 : steps_per_epoch;
  if (c.step_in_epoch() < 0 || c.step_in_epoch() > last_step) {
    fail_field(path, "step_in_epoch", c.step_in_epoch(),
               cat("steps of epoch ", c.epoch() + 1, " completed, 0 to ", last_step, " (", steps_per_epoch,
                   " steps per epoch)"));
  }
  // epoch <= epochs and step <= steps: the product fits, as the run itself counts its steps in int64.
  const int64_t global_step = c.epoch() * steps_per_epoch + c.step_in_epoch();
  if (c.global_step() != global_step) {
    fail_field(path, "global_step", c.global_step(),
               cat(global_step, " (epoch ", c.epoch(), " x ", steps_per_epoch, " steps + step_in_epoch ",
                   c.step_in_epoch(), ")"));
  }
  if (c.history().epochs_size() > c.epoch()) {
    fail_field(path, "history.epochs (records)", c.history().epochs_size(),
               cat("at most one per completed epoch (", c.epoch(), ")"));
  }

  // The model's state.
  if (static_cast<int64_t>(c.parameters_size()) != e.param_count) {
    fail_field(path, "parameters (count)", c.parameters_size(), cat(e.param_count, ", the model's parameter count"));
  }
  check_finite(c.parameters(), "parameters", path);
  const proto::OptimizerState& o = c.optimizer();
  if (o.kind() != e.optimizer_kind) fail_field(path, "optimizer.kind", o.kind(), cat("'", e.optimizer_kind, "'"));
  if (o.iterations() < 0 || o.iterations() > c.global_step()) {
    fail_field(path, "optimizer.iterations", o.iterations(),
               cat("0 to ", c.global_step(), " (the steps trained, global_step)"));
  }
  if (!std::isfinite(o.learning_rate()) || o.learning_rate() < 0.0F) {
    fail_field(path, "optimizer.learning_rate", o.learning_rate(), "a finite number >= 0");
  }
  if (o.slots_size() != static_cast<int>(e.slots.size())) {
    fail_field(path, "optimizer.slots (count)", o.slots_size(), cat(e.slots.size(), " for ", e.optimizer_kind));
  }
  for (int i = 0; i < o.slots_size(); ++i) {
    const proto::Slot& slot = o.slots(i);
    const auto& [name, count] = e.slots[static_cast<size_t>(i)];
    if (slot.name() != name) fail_field(path, cat("optimizer.slots[", i, "].name"), slot.name(), cat("'", name, "'"));
    if (slot.values_size() != count) {
      fail_field(path, cat("optimizer.slots[", i, "].values (count)"), slot.values_size(), cat(count));
    }
    check_finite(slot.values(), cat("optimizer.slots[", i, "].values"), path);
  }

  // Each rank's partial sums of the epoch in progress: loss, metrics..., count.
  const size_t sums = e.sums_per_rank * static_cast<size_t>(e.world_size);
  if (static_cast<size_t>(c.rank_epoch_sums_size()) != sums) {
    fail_field(path, "rank_epoch_sums (count)", c.rank_epoch_sums_size(),
               cat(sums, " (", e.world_size, " ranks x ", e.sums_per_rank, " sums: loss, metrics, count)"));
  }
  check_finite(c.rank_epoch_sums(), "rank_epoch_sums", path);
  for (size_t r = 0; r < static_cast<size_t>(e.world_size) && e.sums_per_rank > 0; ++r) {
    const int at = static_cast<int>((r + 1) * e.sums_per_rank - 1);
    const double count = c.rank_epoch_sums(at);
    if (count < 0.0 || count != std::floor(count)) {
      fail_field(path, cat("rank_epoch_sums[", at, "]"), count,
                 cat("rank ", r, "'s sample count, a whole number >= 0"));
    }
  }
  check_sample_counts(c, e, path);
}

void load_checkpoint_weights(std::string_view bytes, const fs::path& path, Model& model) {
  const proto::Checkpoint checkpoint = decode_checkpoint(bytes, path);
  // The fingerprint opens with the model's summary (layers, widths, parameter counts): compare that part only,
  // since data, batch and seed need not match for inference.
  const std::string summary = model.summary();
  SF_CHECK(checkpoint.job_fingerprint().starts_with(summary),
           cat(quoted(path), " holds the weights of a different model (", checkpoint.parameters_size(),
               " parameters): expected one written for this job's model (", model.param_count(), " parameters)"),
           "use the job file the checkpoint was trained with");
  SF_CHECK(static_cast<int64_t>(checkpoint.parameters_size()) == model.param_count(),
           cat(quoted(path), ": field parameters (count) = ", checkpoint.parameters_size(), ": expected ",
               model.param_count(), ", the model's parameter count"));
  check_finite(checkpoint.parameters(), "parameters", path);
  std::copy(checkpoint.parameters().begin(), checkpoint.parameters().end(), model.parameters().begin());
}

}  // namespace shardfit
