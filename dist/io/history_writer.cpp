// History files (history_writer.h): proto::History laid out as history.json, run.json and history.csv through the
// one JSON and CSV writers (dist/io/json_writer.h, csv_writer.h), and the atomic file replacement under them.
#include "dist/io/history_writer.h"

#include <fcntl.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <span>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "dist/io/csv_writer.h"
#include "dist/io/format.h"
#include "dist/io/json_writer.h"
#include "kernels/error.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

std::string errno_text(int error) { return std::strerror(error); }

// Proto3 strings must be UTF-8: a strict reader (Python's protobuf) rejects the whole history.pb otherwise, and
// the C++ one only logs. A job path in Latin-1 is the likely case; its odd bytes become U+FFFD, as in the json.
bool history_is_utf8(const proto::History& history) {
  if (!is_utf8(history.params().job()) || !is_utf8(history.diagnosis().verdict()) ||
      !is_utf8(history.diagnosis().summary())) {
    return false;
  }
  for (const auto& entry : history.diagnosis().numbers()) {
    if (!is_utf8(entry.first)) return false;
  }
  for (const proto::EpochRecord& record : history.epochs()) {
    for (const auto& entry : record.values()) {
      if (!is_utf8(entry.first)) return false;
    }
  }
  return true;
}

template <typename Map>
void fix_keys(Map& map) {
  Map fixed;
  for (const auto& [key, value] : map) fixed[to_utf8(key)] = value;
  map.swap(fixed);
}

proto::History history_in_utf8(const proto::History& history) {
  proto::History fixed = history;
  fixed.mutable_params()->set_job(to_utf8(history.params().job()));
  if (history.has_diagnosis()) {
    proto::Diagnosis& diagnosis = *fixed.mutable_diagnosis();
    diagnosis.set_verdict(to_utf8(diagnosis.verdict()));
    diagnosis.set_summary(to_utf8(diagnosis.summary()));
    fix_keys(*diagnosis.mutable_numbers());
  }
  for (proto::EpochRecord& record : *fixed.mutable_epochs()) fix_keys(*record.mutable_values());
  return fixed;
}

JsonObject json_params(const proto::HistoryParams& params) {
  JsonObject fields;
  fields.integer("bucket_bytes", params.bucket_bytes())
      .integer("epochs", params.epochs())
      .integer("global_batch", params.global_batch())
      .boolean("overlap", params.overlap())
      .integer("steps", params.steps())
      .integer("threads_per_rank", params.threads_per_rank())
      .integer("train_samples", params.train_samples())
      .integer("validation_samples", params.validation_samples())
      .integer("verbose", params.verbose())
      .integer("world_size", params.world_size());
  if (!params.job().empty()) fields.string("job", params.job());
  // Empty in a history written before they were recorded.
  if (!params.dtype_policy().empty()) fields.string("dtype_policy", params.dtype_policy());
  if (!params.reduce_dtype().empty()) fields.string("reduce_dtype", params.reduce_dtype());
  return fields;
}

JsonObject json_diagnosis(const proto::Diagnosis& diagnosis) {
  JsonObject numbers;
  for (const auto& [key, value] : diagnosis.numbers()) numbers.number(key, value);
  JsonObject fields;
  fields.integer("best_epoch", diagnosis.best_epoch())
      .number("best_val_loss", diagnosis.best_val_loss())
      .object("numbers", numbers)
      .integer("overfitting_from_epoch", diagnosis.overfitting_from_epoch())
      .string("summary", diagnosis.summary())
      .string("verdict", diagnosis.verdict());
  return fields;
}

void write_all(int fd, std::string_view bytes, const fs::path& path) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
      SF_FAIL(cat("cannot write ", path.string(), ": ", errno_text(errno)),
              cat("check free space and quota in ", dir.string()));
    }
    bytes.remove_prefix(static_cast<size_t>(written));
  }
}

void fsync_file(int fd, const fs::path& path) {
  while (::fsync(fd) != 0) {
    if (errno != EINTR) SF_FAIL(cat("cannot fsync ", path.string(), ": ", errno_text(errno)));
  }
}

// The rename is only durable once the folder's entry is on disk. Some file systems (and some network ones) refuse
// fsync on a folder with EINVAL; the rename is then as durable as they make it, which is not an error of ours.
void fsync_folder(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  SF_CHECK(fd >= 0, cat("cannot open folder ", dir.string(), " to fsync it: ", errno_text(errno)));
  int error = 0;
  while (::fsync(fd) != 0) {
    if (errno == EINTR) continue;
    if (errno != EINVAL && errno != EROFS) error = errno;
    break;
  }
  ::close(fd);
  SF_CHECK(error == 0, cat("cannot fsync folder ", dir.string(), ": ", errno_text(error)));
}

}  // namespace

std::string history_to_json(const proto::History& history) {
  // Every key any epoch holds gets one entry per epoch: NaN where that epoch lacks it (validation_freq > 1, a
  // metric added on resume), so every list is as long as the run and pandas can make a table of the dict.
  std::map<std::string, std::vector<double>> lists;
  for (const proto::EpochRecord& record : history.epochs()) {
    for (const auto& entry : record.values()) lists.try_emplace(entry.first);
  }
  for (auto& [key, values] : lists) {
    values.reserve(static_cast<size_t>(history.epochs_size()));
    for (const proto::EpochRecord& record : history.epochs()) {
      const auto found = record.values().find(key);
      values.push_back(found != record.values().end() ? found->second : std::nan(""));
    }
  }
  JsonObject fields;
  for (const auto& [key, values] : lists) fields.numbers(key, values);
  return fields.document();
}

std::string run_to_json(const proto::History& history) {
  std::vector<int64_t> epochs;
  std::vector<double> seconds;
  std::vector<double> samples_per_second;
  for (const proto::EpochRecord& record : history.epochs()) {
    epochs.push_back(record.epoch());
    seconds.push_back(record.seconds());
    samples_per_second.push_back(record.samples_per_second());
  }
  JsonObject fields;
  fields.integers("epoch", epochs)
      .object("params", json_params(history.params()))
      .numbers("seconds", seconds)
      .numbers("samples_per_second", samples_per_second);
  if (history.has_diagnosis()) fields.object("diagnosis", json_diagnosis(history.diagnosis()));
  if (history.peak_rss_bytes_size() > 0) {
    fields.integers("peak_rss_bytes", std::span<const int64_t>(history.peak_rss_bytes().data(),
                                                               static_cast<size_t>(history.peak_rss_bytes_size())));
  }
  return fields.document();
}

std::string history_to_csv(const proto::History& history, char separator) {
  std::set<std::string> keys;
  for (const proto::EpochRecord& record : history.epochs()) {
    for (const auto& entry : record.values()) keys.insert(entry.first);
  }
  std::vector<std::string> fields = {"epoch"};
  fields.insert(fields.end(), keys.begin(), keys.end());
  std::string out = csv_row(fields, separator, "\n");
  for (const proto::EpochRecord& record : history.epochs()) {
    fields = {std::to_string(record.epoch())};
    for (const std::string& key : keys) {
      const auto found = record.values().find(key);
      fields.push_back(found != record.values().end() ? python_float(found->second) : "");
    }
    out += csv_row(fields, separator, "\n");
  }
  return out;
}

void write_file_atomically(const fs::path& path, std::string_view bytes) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  // The pid keeps two processes that share a folder by mistake from writing into one temporary file.
  const fs::path tmp = dir / cat(path.filename().string(), ".tmp.", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SF_CHECK(fd >= 0, cat("cannot create ", tmp.string(), ": ", errno_text(errno)));
  try {
    write_all(fd, bytes, tmp);
    fsync_file(fd, tmp);
    const int closed = ::close(fd);
    fd = -1;
    SF_CHECK(closed == 0, cat("cannot close ", tmp.string(), ": ", errno_text(errno)));
    SF_CHECK(::rename(tmp.c_str(), path.c_str()) == 0,
             cat("cannot rename ", tmp.string(), " to ", path.string(), ": ", errno_text(errno)));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_folder(dir);
}

HistoryWriter::HistoryWriter(fs::path dir) : dir_(dir.empty() ? fs::path(".") : std::move(dir)) {
  std::error_code error;
  fs::create_directories(dir_, error);
  SF_CHECK(!error, cat("cannot create the history folder ", dir_.string(), ": ", error.message()),
           "set outputs.history_dir to a folder this job may write");
  SF_CHECK(fs::is_directory(dir_, error), cat("the history folder ", dir_.string(), " is not a folder"),
           "set outputs.history_dir to a folder this job may write");
}

void HistoryWriter::write(const proto::History& history) const {
  // Everything is rendered before the first file is touched, so a rendering error leaves the old files whole.
  const bool already_utf8 = history_is_utf8(history);
  const proto::History fixed = already_utf8 ? proto::History() : history_in_utf8(history);
  const proto::History& utf8 = already_utf8 ? history : fixed;
  const std::string json = history_to_json(utf8);
  const std::string run = run_to_json(utf8);
  const std::string pb = serialize_deterministic(utf8);
  const std::string csv = history_to_csv(utf8);
  write_file_atomically(json_path(), json);
  write_file_atomically(run_json_path(), run);
  write_file_atomically(pb_path(), pb);
  write_file_atomically(csv_path(), csv);
}

std::string serialize_deterministic(const google::protobuf::MessageLite& message) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    SF_CHECK(message.SerializeToCodedStream(&coded), "cannot serialise a protobuf message");
  }
  return bytes;
}

proto::History read_history_pb(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  SF_CHECK(in.is_open(), cat("cannot open ", path.string(), ": ", errno_text(errno)));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  SF_CHECK(!in.bad(), cat("cannot read ", path.string(), ": ", errno_text(errno)));
  proto::History history;
  SF_CHECK(history.ParseFromString(bytes), cat(path.string(), " is not a binary shardfit History"),
           "history.pb is written by shardfit; history.json is the text form");
  return history;
}

}  // namespace shardfit
