// History files (history_writer.h): a small JSON and CSV emitter over proto::History and the atomic file
// replacement under them. Not a general JSON library: it writes exactly the shapes documented in the header.
#include "dist/io/history_writer.h"

#include <fcntl.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "kernels/error.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

std::string errno_text(int error) { return std::strerror(error); }

// Length of the valid UTF-8 sequence at s[i], or 0 when the bytes there are not valid UTF-8 (overlong forms,
// surrogates and code points past U+10FFFF included).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  if (lead < 0x80) return 1;
  size_t length = 0;
  uint32_t code_point = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return 0;
  }
  if (i + length > s.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    const auto next = static_cast<unsigned char>(s[i + k]);
    if ((next & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (next & 0x3F);
  }
  constexpr std::array<uint32_t, 5> kSmallest = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kSmallest[length] || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return 0;
  }
  return length;
}

// A JSON string literal. Bytes that are not UTF-8 (a job path in Latin-1, say) become U+FFFD, so that the file
// stays loadable by strict readers instead of failing on one odd name.
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          std::array<char, 8> escaped{};
          std::snprintf(escaped.data(), escaped.size(), "\\u%04x", static_cast<unsigned>(c));
          out += escaped.data();
        } else {
          const size_t length = utf8_sequence_length(s, i);
          if (length == 0) {
            out += "\\ufffd";
            ++i;
            continue;
          }
          out.append(s.substr(i, length));
          i += length;
          continue;
        }
    }
    ++i;
  }
  out += '"';
}

std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

bool is_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t length = utf8_sequence_length(s, i);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string to_utf8(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t length = utf8_sequence_length(s, i);
    out += length == 0 ? std::string_view("\xef\xbf\xbd") : s.substr(i, length);  // U+FFFD
    i += length == 0 ? 1 : length;
  }
  return out;
}

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

std::string json_list(const std::vector<double>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    out += json_number(values[i]);
  }
  return out + "]";
}

// {"a": 1, "b": 2} from already rendered values; std::map keeps the keys sorted.
std::string json_object(const std::map<std::string, std::string>& fields) {
  std::string out = "{";
  bool first = true;
  for (const auto& [key, value] : fields) {
    if (!first) out += ", ";
    first = false;
    append_json_string(out, key);
    out += ": ";
    out += value;
  }
  return out + "}";
}

std::string json_params(const proto::HistoryParams& params) {
  std::map<std::string, std::string> fields = {
      {"epochs", std::to_string(params.epochs())},
      {"global_batch", std::to_string(params.global_batch())},
      {"steps", std::to_string(params.steps())},
      {"threads_per_rank", std::to_string(params.threads_per_rank())},
      {"train_samples", std::to_string(params.train_samples())},
      {"validation_samples", std::to_string(params.validation_samples())},
      {"verbose", std::to_string(params.verbose())},
      {"world_size", std::to_string(params.world_size())},
  };
  if (!params.job().empty()) fields["job"] = json_string(params.job());
  return json_object(fields);
}

std::string json_diagnosis(const proto::Diagnosis& diagnosis) {
  std::map<std::string, std::string> numbers;
  for (const auto& [key, value] : diagnosis.numbers()) numbers[key] = json_number(value);
  return json_object({
      {"best_epoch", std::to_string(diagnosis.best_epoch())},
      {"best_val_loss", json_number(diagnosis.best_val_loss())},
      {"numbers", json_object(numbers)},
      {"overfitting_from_epoch", std::to_string(diagnosis.overfitting_from_epoch())},
      {"summary", json_string(diagnosis.summary())},
      {"verdict", json_string(diagnosis.verdict())},
  });
}

// Python's str(float) spelling for the non-finite values, which is what Keras's CSVLogger writes.
std::string csv_number(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return json_number(value);
}

// RFC 4180: quote a field only when it holds the separator, a quote or a line break.
std::string csv_field(std::string_view text, char separator) {
  if (text.find_first_of(std::string{separator, '"', '\n', '\r'}) == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
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

// One key per line and each list on its line: readable, and `diff` between runs shows which key moved.
std::string json_document(const std::map<std::string, std::string>& fields) {
  std::string out = "{\n";
  bool first = true;
  for (const auto& [key, value] : fields) {
    if (!first) out += ",\n";
    first = false;
    out += "  ";
    append_json_string(out, key);
    out += ": ";
    out += value;
  }
  out += "\n}\n";
  return out;
}

}  // namespace

std::string json_number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  // Without a precision, to_chars gives the shortest digits that read back to exactly this double.
  std::array<char, 40> buffer{};  // zeroed: atoi below reads up to the terminator
  const auto [end, error] =
      std::to_chars(buffer.data(), buffer.data() + buffer.size() - 1, value, std::chars_format::scientific);
  SF_CHECK(error == std::errc(), "cannot format a double");  // 39 chars hold any double's shortest form
  const std::string_view scientific(buffer.data(), static_cast<size_t>(end - buffer.data()));
  const size_t e_at = scientific.find('e');
  const int exponent = std::atoi(buffer.data() + e_at + 1);
  // Python's repr() switches to the exponent form outside [1e-4, 1e16); its exponent form is to_chars's.
  if (exponent < -4 || exponent >= 16) return std::string(scientific);
  const bool negative = scientific.front() == '-';
  std::string digits;
  for (char c : scientific.substr(negative ? 1 : 0, e_at - (negative ? 1 : 0))) {
    if (c != '.') digits += c;
  }
  std::string out = negative ? "-" : "";
  if (exponent >= 0) {
    const auto integer_digits = static_cast<size_t>(exponent) + 1;
    if (digits.size() <= integer_digits) {
      out += digits + std::string(integer_digits - digits.size(), '0') + ".0";  // "2.0": a float, not an int
    } else {
      out += digits.substr(0, integer_digits) + "." + digits.substr(integer_digits);
    }
  } else {
    out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  }
  return out;
}

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
  std::map<std::string, std::string> fields;
  for (const auto& [key, values] : lists) fields[key] = json_list(values);
  return json_document(fields);
}

std::string run_to_json(const proto::History& history) {
  std::vector<double> seconds;
  std::vector<double> samples_per_second;
  std::string epochs = "[";
  for (int i = 0; i < history.epochs_size(); ++i) {
    const proto::EpochRecord& record = history.epochs(i);
    seconds.push_back(record.seconds());
    samples_per_second.push_back(record.samples_per_second());
    if (i > 0) epochs += ", ";
    epochs += std::to_string(record.epoch());
  }
  epochs += "]";
  std::map<std::string, std::string> fields = {
      {"epoch", epochs},
      {"params", json_params(history.params())},
      {"seconds", json_list(seconds)},
      {"samples_per_second", json_list(samples_per_second)},
  };
  if (history.has_diagnosis()) fields["diagnosis"] = json_diagnosis(history.diagnosis());
  return json_document(fields);
}

std::string history_to_csv(const proto::History& history, char separator) {
  std::set<std::string> keys;
  for (const proto::EpochRecord& record : history.epochs()) {
    for (const auto& entry : record.values()) keys.insert(entry.first);
  }
  std::string out = "epoch";
  for (const std::string& key : keys) {
    out += separator;
    out += csv_field(key, separator);
  }
  out += '\n';
  for (const proto::EpochRecord& record : history.epochs()) {
    out += std::to_string(record.epoch());
    for (const std::string& key : keys) {
      out += separator;
      const auto found = record.values().find(key);
      if (found != record.values().end()) out += csv_number(found->second);
    }
    out += '\n';
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
