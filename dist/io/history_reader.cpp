// Reading history files back (history_reader.h): a small JSON reader for exactly what history_writer writes (Python's
// json dialect: NaN, Infinity and -Infinity allowed), a CSV reader for history.csv, and the choice of file.
#include "dist/io/history_reader.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dist/io/history_writer.h"
#include "kernels/error.h"
#include "kernels/job_file.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

constexpr const char* kWhatPlotReads =
    "a history folder, history.pb, history.json (with run.json beside it for the verdict) or history.csv";

// ---- JSON ----

struct JsonValue {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  double number = 0.0;
  std::string text;
  std::vector<JsonValue> items;
  std::map<std::string, JsonValue> members;

  const JsonValue* find(const std::string& key) const {
    const auto found = members.find(key);
    return found == members.end() ? nullptr : &found->second;
  }
};

class JsonReader {
 public:
  JsonReader(std::string_view text, const fs::path& path) : text_(text), path_(path) {}

  JsonValue document() {
    JsonValue value = parse_value(0);
    skip_space();
    if (at_ < text_.size()) fail("text after the end of the document");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void fail(const std::string& what) const {
    size_t line = 1;
    for (size_t i = 0; i < at_ && i < text_.size(); ++i) line += text_[i] == '\n' ? 1 : 0;
    SF_FAIL(cat(path_.string(), ":", line, ": not valid JSON: ", what),
            "history.json is written by shardfit fit; history.pb beside it holds the same values");
  }

  void skip_space() {
    while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\r' || text_[at_] == '\t'))
      ++at_;
  }

  bool take(std::string_view word) {
    if (text_.substr(at_, word.size()) != word) return false;
    at_ += word.size();
    return true;
  }

  JsonValue parse_value(int depth) {
    if (depth > kMaxDepth) fail("nested too deeply");
    skip_space();
    if (at_ >= text_.size()) fail("unexpected end");
    JsonValue value;
    const char c = text_[at_];
    if (c == '{') {
      value.kind = JsonValue::Kind::kObject;
      ++at_;
      skip_space();
      if (take("}")) return value;
      while (true) {
        skip_space();
        if (at_ >= text_.size() || text_[at_] != '"') fail("expected a key in quotes");
        std::string key = parse_string();
        skip_space();
        if (!take(":")) fail("expected ':' after a key");
        value.members[key] = parse_value(depth + 1);
        skip_space();
        if (take("}")) return value;
        if (!take(",")) fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      value.kind = JsonValue::Kind::kArray;
      ++at_;
      skip_space();
      if (take("]")) return value;
      while (true) {
        value.items.push_back(parse_value(depth + 1));
        skip_space();
        if (take("]")) return value;
        if (!take(",")) fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      value.kind = JsonValue::Kind::kString;
      value.text = parse_string();
      return value;
    }
    if (take("null")) return value;
    if (take("true") || take("false")) {
      value.kind = JsonValue::Kind::kBool;
      return value;
    }
    value.kind = JsonValue::Kind::kNumber;
    if (take("NaN")) {
      value.number = std::numeric_limits<double>::quiet_NaN();
    } else if (take("Infinity")) {
      value.number = std::numeric_limits<double>::infinity();
    } else if (take("-Infinity")) {
      value.number = -std::numeric_limits<double>::infinity();
    } else {
      const std::string rest(text_.substr(at_, std::min<size_t>(64, text_.size() - at_)));
      char* end = nullptr;
      value.number = std::strtod(rest.c_str(), &end);
      if (end == rest.c_str() || !(c == '-' || (c >= '0' && c <= '9'))) fail("expected a value");
      at_ += static_cast<size_t>(end - rest.c_str());
    }
    return value;
  }

  // The escapes history_writer emits and the rest of JSON's; \u escapes become UTF-8 (a lone surrogate: U+FFFD).
  std::string parse_string() {
    ++at_;  // the opening quote
    std::string out;
    while (true) {
      if (at_ >= text_.size()) fail("unterminated string");
      const char c = text_[at_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= text_.size()) fail("unterminated string");
      const char e = text_[at_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'u': {
          if (at_ + 4 > text_.size()) fail("short \\u escape");
          const std::string hex(text_.substr(at_, 4));
          char* end = nullptr;
          unsigned code = static_cast<unsigned>(std::strtoul(hex.c_str(), &end, 16));
          if (end != hex.c_str() + 4) fail("bad \\u escape");
          at_ += 4;
          if (code >= 0xD800 && code <= 0xDFFF) code = 0xFFFD;
          if (code < 0x80) {
            out += static_cast<char>(code);
          } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
          }
          break;
        }
        default:
          fail(cat("unknown escape \\", e));
      }
    }
  }

  std::string_view text_;
  fs::path path_;
  size_t at_ = 0;
};

JsonValue read_json(const fs::path& path) {
  const std::string text = read_text_file(path, "history file");
  return JsonReader(text, path).document();
}

int64_t json_integer(const JsonValue* value, int64_t fallback) {
  return value != nullptr && value->kind == JsonValue::Kind::kNumber ? static_cast<int64_t>(value->number) : fallback;
}

// run.json's params and diagnosis, for the plot's caption and shading; the rest of run.json is not needed here.
void read_run_json(const fs::path& path, proto::History& history) {
  const JsonValue run = read_json(path);
  SF_CHECK(run.kind == JsonValue::Kind::kObject, cat(path.string(), ": expected a JSON object"));
  if (const JsonValue* params = run.find("params"); params != nullptr) {
    proto::HistoryParams& out = *history.mutable_params();
    out.set_epochs(json_integer(params->find("epochs"), 0));
    out.set_steps(json_integer(params->find("steps"), 0));
    out.set_world_size(static_cast<int32_t>(json_integer(params->find("world_size"), 0)));
    out.set_global_batch(json_integer(params->find("global_batch"), 0));
    if (const JsonValue* job = params->find("job"); job != nullptr) out.set_job(job->text);
  }
  if (const JsonValue* diagnosis = run.find("diagnosis"); diagnosis != nullptr) {
    proto::Diagnosis& out = *history.mutable_diagnosis();
    if (const JsonValue* verdict = diagnosis->find("verdict"); verdict != nullptr) out.set_verdict(verdict->text);
    if (const JsonValue* summary = diagnosis->find("summary"); summary != nullptr) out.set_summary(summary->text);
    out.set_best_epoch(json_integer(diagnosis->find("best_epoch"), -1));
    out.set_overfitting_from_epoch(json_integer(diagnosis->find("overfitting_from_epoch"), -1));
    if (const JsonValue* best = diagnosis->find("best_val_loss"); best != nullptr) out.set_best_val_loss(best->number);
  }
}

proto::History read_history_json(const fs::path& path) {
  const JsonValue json = read_json(path);
  SF_CHECK(json.kind == JsonValue::Kind::kObject,
           cat(path.string(), ": expected an object of lists ({\"loss\": [...], ...}), as fit writes history.json"));
  proto::History history;
  for (const auto& [key, list] : json.members) {
    bool numbers = list.kind == JsonValue::Kind::kArray;
    for (const JsonValue& item : list.items) {
      numbers = numbers && item.kind != JsonValue::Kind::kObject && item.kind != JsonValue::Kind::kArray &&
                item.kind != JsonValue::Kind::kString;
    }
    SF_CHECK(numbers, cat(path.string(), ": \"", key, "\" is not a list of numbers"),
             "history.json holds one list of numbers per key (Keras's history.history); a history.json written "
             "before run.json existed also holds params: plot the history.pb beside it");
    while (history.epochs_size() < static_cast<int>(list.items.size())) {
      history.add_epochs()->set_epoch(history.epochs_size() - 1);
    }
    for (size_t i = 0; i < list.items.size(); ++i) {
      const JsonValue& item = list.items[i];
      if (item.kind != JsonValue::Kind::kNumber || std::isnan(item.number)) continue;  // padding: no value
      (*history.mutable_epochs(static_cast<int>(i))->mutable_values())[key] = item.number;
    }
  }
  const fs::path run = history_files(path.parent_path()).run_json;
  if (fs::exists(run)) read_run_json(run, history);
  return history;
}

// ---- CSV ----

// One record of history.csv: RFC 4180 fields (quotes only around a field holding the separator, a quote or a line
// break, as history_writer writes them).
std::vector<std::string> csv_fields(std::string_view line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  return fields;
}

proto::History read_history_csv(const fs::path& path) {
  const std::string text = read_text_file(path, "history file");
  std::vector<std::string_view> lines;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.empty()) lines.push_back(line);
    start = end + 1;
  }
  SF_CHECK(!lines.empty(), cat(path.string(), " is empty: expected a header `epoch,loss,...`"));
  const std::vector<std::string> header = csv_fields(lines[0]);
  SF_CHECK(header[0] == "epoch", cat(path.string(), ":1: the first column is '", header[0], "', expected 'epoch'"),
           "history.csv is written by shardfit fit (CSVLogger's layout)");
  proto::History history;
  for (size_t row = 1; row < lines.size(); ++row) {
    const std::vector<std::string> fields = csv_fields(lines[row]);
    SF_CHECK(fields.size() == header.size(),
             cat(path.string(), ":", row + 1, ": ", fields.size(), " fields for ", header.size(), " columns"));
    proto::EpochRecord& record = *history.add_epochs();
    char* end = nullptr;
    const long long epoch = std::strtoll(fields[0].c_str(), &end, 10);
    SF_CHECK(!fields[0].empty() && *end == '\0' && epoch >= 0,
             cat(path.string(), ":", row + 1, ": epoch '", fields[0], "', expected a whole number >= 0"));
    record.set_epoch(epoch);
    for (size_t c = 1; c < fields.size(); ++c) {
      if (fields[c].empty()) continue;  // the epoch has no value for this key
      const double value = std::strtod(fields[c].c_str(), &end);
      SF_CHECK(*end == '\0',
               cat(path.string(), ":", row + 1, ": ", header[c], " = '", fields[c], "', expected a number"));
      (*record.mutable_values())[header[c]] = value;
    }
  }
  return history;
}

}  // namespace

proto::History read_history_any(const fs::path& path) {
  std::error_code error;
  if (fs::is_directory(path, error)) {
    const HistoryFiles files = history_files(path);
    for (const fs::path& file : {files.pb, files.json, files.csv}) {  // the fullest first
      if (fs::exists(file)) return read_history_any(file);
    }
    SF_FAIL(cat(path.string(), " holds no history.pb, history.json or history.csv"),
            "pass the folder fit wrote its history to (outputs.history_dir / --history)");
  }
  SF_CHECK(fs::exists(path, error), cat("no such history: '", path.string(), "': expected ", kWhatPlotReads));
  const fs::path extension = path.extension();
  if (extension == ".pb") return read_history_pb(path);
  if (extension == ".json") return read_history_json(path);
  if (extension == ".csv") return read_history_csv(path);
  SF_FAIL(cat("cannot plot '", path.string(), "': expected ", kWhatPlotReads));
}

}  // namespace shardfit
