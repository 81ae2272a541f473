// HistoryWriter: the four files hold the history exactly (json through a small strict parser here and through
// Python's json module, pb through the generated classes, csv by text), and SIGKILL at random moments never
// leaves a torn file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dist/io/history_writer.h"
#include "kernels/error.h"
#include "tests/support/temp_dir.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- a strict JSON reader, plus NaN / Infinity / -Infinity as Python accepts them ----

struct Json {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0.0;
  bool integral = false;  // the text had no '.', exponent, NaN or Infinity
  std::string text;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;  // in file order, to check the sorting

  const Json& at(const std::string& key) const {
    for (const auto& [name, value] : members) {
      if (name == key) return value;
    }
    throw std::runtime_error("no key " + key);
  }
  bool has(const std::string& key) const {
    for (const auto& member : members) {
      if (member.first == key) return true;
    }
    return false;
  }
  std::vector<double> numbers() const {
    std::vector<double> out;
    for (const Json& item : items) {
      if (item.kind != Kind::kNumber) throw std::runtime_error("not a number in a list");
      out.push_back(item.number);
    }
    return out;
  }
};

class JsonReader {
 public:
  explicit JsonReader(std::string text) : text_(std::move(text)) {}

  Json parse() {
    Json value = parse_value();
    skip_space();
    if (at_ != text_.size()) error("trailing bytes");
    return value;
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    throw std::runtime_error("json: " + what + " at byte " + std::to_string(at_));
  }
  void skip_space() {
    while (at_ < text_.size() &&
           (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\t' || text_[at_] == '\r')) {
      ++at_;
    }
  }
  bool take(const std::string& word) {
    if (text_.compare(at_, word.size(), word) != 0) return false;
    at_ += word.size();
    return true;
  }
  void expect(char c) {
    skip_space();
    if (at_ >= text_.size() || text_[at_] != c) error(std::string("expected ") + c);
    ++at_;
  }

  Json parse_value() {
    skip_space();
    if (at_ >= text_.size()) error("unexpected end");
    Json value;
    const char c = text_[at_];
    if (c == '{') {
      value.kind = Json::Kind::kObject;
      ++at_;
      skip_space();
      if (take("}")) return value;
      do {
        skip_space();
        std::string key = parse_string();
        expect(':');
        value.members.emplace_back(std::move(key), parse_value());
        skip_space();
      } while (take(","));
      expect('}');
    } else if (c == '[') {
      value.kind = Json::Kind::kArray;
      ++at_;
      skip_space();
      if (take("]")) return value;
      do {
        value.items.push_back(parse_value());
        skip_space();
      } while (take(","));
      expect(']');
    } else if (c == '"') {
      value.kind = Json::Kind::kString;
      value.text = parse_string();
    } else if (take("true")) {
      value.kind = Json::Kind::kBool;
      value.boolean = true;
    } else if (take("false")) {
      value.kind = Json::Kind::kBool;
    } else if (take("null")) {
      value.kind = Json::Kind::kNull;
    } else {
      value.kind = Json::Kind::kNumber;
      parse_number(value);
    }
    return value;
  }

  void parse_number(Json& value) {
    if (take("NaN")) {
      value.number = kNaN;
      return;
    }
    if (take("Infinity")) {
      value.number = kInf;
      return;
    }
    if (take("-Infinity")) {
      value.number = -kInf;
      return;
    }
    const size_t begin = at_;
    // JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    auto digits = [&] {
      const size_t from = at_;
      while (at_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[at_]))) ++at_;
      if (at_ == from) error("expected digits");
      return at_ - from;
    };
    take("-");
    const size_t leading = at_;
    const size_t integer_digits = digits();
    if (integer_digits > 1 && text_[leading] == '0') error("leading zero");
    value.integral = true;
    if (take(".")) {
      digits();
      value.integral = false;
    }
    if (at_ < text_.size() && (text_[at_] == 'e' || text_[at_] == 'E')) {
      ++at_;
      if (!take("+")) take("-");
      digits();
      value.integral = false;
    }
    value.number = std::strtod(text_.substr(begin, at_ - begin).c_str(), nullptr);
  }

  std::string parse_string() {
    if (at_ >= text_.size() || text_[at_] != '"') error("expected a string");
    ++at_;
    std::string out;
    while (true) {
      if (at_ >= text_.size()) error("unterminated string");
      const char c = text_[at_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("raw control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_ >= text_.size()) error("unterminated escape");
      const char e = text_[at_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
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
        case 'u': {
          if (at_ + 4 > text_.size()) error("short \\u escape");
          const unsigned code = std::stoul(text_.substr(at_, 4), nullptr, 16);
          at_ += 4;
          if (code >= 0xD800 && code <= 0xDFFF) error("surrogate escapes are not expected here");
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
          error("unknown escape");
      }
    }
  }

  std::string text_;
  size_t at_ = 0;
};

// ---- helpers ----

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Same double, bit for bit; every NaN counts as the same.
bool same_double(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

::testing::AssertionResult same_doubles(const std::vector<double>& actual, const std::vector<double>& expected) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure() << "length " << actual.size() << " != " << expected.size();
  }
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!same_double(actual[i], expected[i])) {
      return ::testing::AssertionFailure()
             << "at " << i << ": " << json_number(actual[i]) << " != " << json_number(expected[i]);
    }
  }
  return ::testing::AssertionSuccess();
}

proto::EpochRecord& add_epoch(proto::History& history, int64_t epoch, const std::map<std::string, double>& values,
                              double seconds, double samples_per_second) {
  proto::EpochRecord& record = *history.add_epochs();
  record.set_epoch(epoch);
  for (const auto& [key, value] : values) (*record.mutable_values())[key] = value;
  record.set_seconds(seconds);
  record.set_samples_per_second(samples_per_second);
  return record;
}

// Three epochs with validation every second epoch (val_ only at epoch 1), a NaN loss at the end, and strings that
// need escaping.
proto::History sample_history() {
  proto::History history;
  proto::HistoryParams& params = *history.mutable_params();
  params.set_verbose(2);
  params.set_epochs(3);
  params.set_steps(57);
  params.set_world_size(4);
  params.set_global_batch(32);
  params.set_train_samples(1797);
  params.set_validation_samples(0);
  params.set_threads_per_rank(2);
  params.set_overlap(true);
  params.set_bucket_bytes(1 << 20);
  params.set_dtype_policy("mixed_bfloat16");
  params.set_reduce_dtype("bfloat16");
  params.set_job("jobs/\"digits\"\\mlp.pbtxt");
  add_epoch(history, 0, {{"loss", 0.5}, {"accuracy", 0.75}, {"learning_rate", 0.001}}, 1.25, 1437.6);
  add_epoch(history, 1,
            {{"loss", 1.0 / 3.0},
             {"accuracy", 2.0},
             {"learning_rate", 0.001},
             {"val_loss", 0.1 + 0.2},
             {"val_accuracy", 5e-324}},
            0.1, 1e300);
  add_epoch(history, 2, {{"loss", kNaN}, {"accuracy", -kInf}, {"learning_rate", 1e-4}}, 2.0, kInf);
  proto::Diagnosis& diagnosis = *history.mutable_diagnosis();
  diagnosis.set_verdict("undetermined");
  diagnosis.set_best_epoch(1);
  diagnosis.set_best_val_loss(0.1 + 0.2);
  diagnosis.set_summary("tab\there, \"quoted\", new\nline, \x01, caf\xc3\xa9, bad \xff byte");
  (*diagnosis.mutable_numbers())["gap"] = -0.0;
  return history;
}

std::vector<double> values_of(const proto::History& history, const std::string& key) {
  std::vector<double> out;
  for (const proto::EpochRecord& record : history.epochs()) {
    const auto found = record.values().find(key);
    if (found != record.values().end()) out.push_back(found->second);
  }
  return out;
}

// history.json's list for `key`: one entry per epoch, NaN where the epoch lacks the key.
std::vector<double> padded_values_of(const proto::History& history, const std::string& key) {
  std::vector<double> out;
  for (const proto::EpochRecord& record : history.epochs()) {
    const auto found = record.values().find(key);
    out.push_back(found != record.values().end() ? found->second : kNaN);
  }
  return out;
}

// ---- tests ----

TEST(JsonNumber, ShortestTextReadsBackExactly) {
  const std::vector<double> values = {0.1,   1.0 / 3.0, 0.1 + 0.2, 5e-324, 2.2250738585072014e-308,
                                      1e300, -1e-300,   123456.0,  -0.0,   std::numeric_limits<double>::max(),
                                      2.0,   1e16,      0.001,     1e-5};
  for (double value : values) {
    const std::string text = json_number(value);
    EXPECT_TRUE(same_double(std::strtod(text.c_str(), nullptr), value)) << text;
    EXPECT_NE(text.find_first_of(".e"), std::string::npos) << text << " would read as an integer";
  }
  // Python's repr() of the same doubles.
  const std::vector<std::pair<double, std::string>> python = {
      {0.1, "0.1"},
      {2.0, "2.0"},
      {-0.0, "-0.0"},
      {0.1 + 0.2, "0.30000000000000004"},
      {1e-4, "0.0001"},
      {1.5e-4, "0.00015"},
      {1e-5, "1e-05"},
      {-1.5e-7, "-1.5e-07"},
      {123456.789, "123456.789"},
      {1e15, "1000000000000000.0"},
      {1e16, "1e+16"},
      {-2.5e20, "-2.5e+20"},
      {5e-324, "5e-324"},
      {std::numeric_limits<double>::max(), "1.7976931348623157e+308"},
  };
  for (const auto& [value, text] : python) EXPECT_EQ(json_number(value), text);
  EXPECT_EQ(json_number(kNaN), "NaN");
  EXPECT_EQ(json_number(kInf), "Infinity");
  EXPECT_EQ(json_number(-kInf), "-Infinity");
}

TEST(HistoryWriter, WritesFourFilesThatRoundTrip) {
  const shardfit::testing::TempDir tmp("history");
  const proto::History history = sample_history();
  const HistoryWriter writer(tmp.path() / "nested" / "out");  // created with its parent
  writer.write(history);

  // history.pb, through the generated classes.
  const proto::History read = read_history_pb(writer.pb_path());
  ASSERT_EQ(read.epochs_size(), 3);
  EXPECT_EQ(read.params().job(), history.params().job());
  EXPECT_EQ(read.params().train_samples(), 1797);
  for (const std::string key : {"loss", "accuracy", "learning_rate", "val_loss", "val_accuracy"}) {
    EXPECT_TRUE(same_doubles(values_of(read, key), values_of(history, key))) << key;
  }
  // The byte that is not UTF-8 became U+FFFD here too: proto3 strings must be UTF-8.
  const std::string summary = "tab\there, \"quoted\", new\nline, \x01, caf\xc3\xa9, bad \xef\xbf\xbd byte";
  EXPECT_EQ(read.diagnosis().summary(), summary);
  EXPECT_TRUE(std::signbit(read.diagnosis().numbers().at("gap")));

  // history.json: Keras's history.history and nothing else, every list one entry per epoch.
  const Json json = JsonReader(read_text(writer.json_path())).parse();
  ASSERT_EQ(json.kind, Json::Kind::kObject);
  std::vector<std::string> keys;
  for (const auto& member : json.members) keys.push_back(member.first);
  EXPECT_EQ(keys, (std::vector<std::string>{"accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"}));
  for (const auto& [key, value] : json.members) {
    EXPECT_EQ(value.kind, Json::Kind::kArray) << key;
    EXPECT_EQ(value.items.size(), 3u) << key << ": one entry per epoch";
  }
  EXPECT_TRUE(same_doubles(json.at("loss").numbers(), {0.5, 1.0 / 3.0, kNaN}));
  EXPECT_TRUE(same_doubles(json.at("accuracy").numbers(), {0.75, 2.0, -kInf}));
  EXPECT_TRUE(same_doubles(json.at("learning_rate").numbers(), {0.001, 0.001, 1e-4}));
  // validation_freq 2: validation ran in epoch 1 only; the other epochs hold NaN, as pandas shows a missing value.
  EXPECT_TRUE(same_doubles(json.at("val_loss").numbers(), {kNaN, 0.1 + 0.2, kNaN}));
  EXPECT_TRUE(same_doubles(json.at("val_accuracy").numbers(), {kNaN, 5e-324, kNaN}));
  for (const Json& item : json.at("loss").items) EXPECT_FALSE(item.integral) << "a loss must load as a float";

  // run.json: the run's parameters, timings and verdict.
  const Json run = JsonReader(read_text(writer.run_json_path())).parse();
  ASSERT_EQ(run.kind, Json::Kind::kObject);
  std::vector<std::string> run_keys;
  for (const auto& member : run.members) run_keys.push_back(member.first);
  EXPECT_EQ(run_keys, (std::vector<std::string>{"diagnosis", "epoch", "params", "samples_per_second", "seconds"}));
  EXPECT_TRUE(same_doubles(run.at("seconds").numbers(), {1.25, 0.1, 2.0}));
  EXPECT_TRUE(same_doubles(run.at("samples_per_second").numbers(), {1437.6, 1e300, kInf}));
  const Json& epoch = run.at("epoch");
  ASSERT_EQ(epoch.items.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(epoch.items[i].integral);
    EXPECT_EQ(epoch.items[i].number, static_cast<double>(i));
  }
  const Json& params = run.at("params");
  std::vector<std::string> param_keys;
  for (const auto& member : params.members) param_keys.push_back(member.first);
  EXPECT_EQ(param_keys, (std::vector<std::string>{"bucket_bytes", "dtype_policy", "epochs", "global_batch", "job",
                                                  "overlap", "reduce_dtype", "steps", "threads_per_rank",
                                                  "train_samples", "validation_samples", "verbose", "world_size"}));
  EXPECT_EQ(params.at("epochs").number, 3);
  EXPECT_EQ(params.at("steps").number, 57);
  EXPECT_EQ(params.at("world_size").number, 4);
  EXPECT_EQ(params.at("global_batch").number, 32);
  EXPECT_EQ(params.at("train_samples").number, 1797);
  EXPECT_EQ(params.at("validation_samples").number, 0);
  EXPECT_EQ(params.at("threads_per_rank").number, 2);
  EXPECT_EQ(params.at("verbose").number, 2);
  EXPECT_EQ(params.at("job").text, history.params().job());
  // Whether the allreduce overlapped backward, and in what buckets: a run's speed says what it measured.
  EXPECT_EQ(params.at("overlap").kind, Json::Kind::kBool);
  EXPECT_TRUE(params.at("overlap").boolean);
  EXPECT_EQ(params.at("bucket_bytes").number, 1 << 20);
  EXPECT_EQ(params.at("dtype_policy").text, "mixed_bfloat16");
  EXPECT_EQ(params.at("reduce_dtype").text, "bfloat16");
  const Json& diagnosis = run.at("diagnosis");
  EXPECT_EQ(diagnosis.at("verdict").text, "undetermined");
  EXPECT_EQ(diagnosis.at("best_epoch").number, 1);
  EXPECT_TRUE(same_double(diagnosis.at("best_val_loss").number, 0.1 + 0.2));
  // Everything survives escaping except the byte that is not UTF-8, which becomes U+FFFD.
  EXPECT_EQ(diagnosis.at("summary").text, summary);
  EXPECT_TRUE(std::signbit(diagnosis.at("numbers").at("gap").number));

  // history.csv: CSVLogger's layout, a missing value as an empty field.
  EXPECT_EQ(read_text(writer.csv_path()),
            "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
            "0,0.75,0.001,0.5,,\n"
            "1,2.0,0.001,0.3333333333333333,5e-324,0.30000000000000004\n"
            "2,-inf,0.0001,nan,,\n");

  // No temporary file is left behind after a clean write.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(writer.dir())) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"history.csv", "history.json", "history.pb", "run.json"}));
}

// The ranks' peak RSS, when the history has them, is run.json's "peak_rss_bytes": integers, one per rank, in rank
// order; a history without them (written before they existed) leaves the key out.
TEST(HistoryWriter, PeakRssOfEachRankInRunJson) {
  const shardfit::testing::TempDir tmp("history");
  const HistoryWriter writer(tmp.path());
  proto::History history;
  history.mutable_params()->set_world_size(3);
  for (const int64_t bytes : {int64_t{123} << 20, int64_t{5} << 30, int64_t{1}}) history.add_peak_rss_bytes(bytes);
  writer.write(history);
  const Json run = JsonReader(read_text(writer.run_json_path())).parse();
  const Json& peaks = run.at("peak_rss_bytes");
  ASSERT_EQ(peaks.items.size(), 3u);
  const double want[] = {123.0 * (1 << 20), 5.0 * (int64_t{1} << 30), 1.0};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(peaks.items[i].integral) << i;
    EXPECT_EQ(peaks.items[i].number, want[i]) << i;
  }
  EXPECT_EQ(read_history_pb(writer.pb_path()).peak_rss_bytes_size(), 3);

  history.clear_peak_rss_bytes();
  writer.write(history);
  EXPECT_FALSE(JsonReader(read_text(writer.run_json_path())).parse().has("peak_rss_bytes"));
}

TEST(HistoryWriter, NoDiagnosisAndNoEpochsStillValid) {
  const shardfit::testing::TempDir tmp("history");
  const HistoryWriter writer(tmp.path());
  proto::History history;
  history.mutable_params()->set_epochs(5);
  writer.write(history);
  const Json json = JsonReader(read_text(writer.json_path())).parse();
  EXPECT_EQ(json.kind, Json::Kind::kObject);
  EXPECT_TRUE(json.members.empty());  // Keras's history.history before the first epoch: {}
  const Json run = JsonReader(read_text(writer.run_json_path())).parse();
  EXPECT_FALSE(run.has("diagnosis"));
  EXPECT_FALSE(run.at("params").has("job"));  // only written when set
  EXPECT_TRUE(run.at("epoch").items.empty());
  EXPECT_EQ(read_text(writer.csv_path()), "epoch\n");
  EXPECT_EQ(read_history_pb(writer.pb_path()).params().epochs(), 5);
}

TEST(HistoryWriter, CsvQuotesOddKeys) {
  proto::History history;
  add_epoch(history, 0, {{"a,b", 1.5}, {"q\"", 2.5}}, 0, 0);
  EXPECT_EQ(history_to_csv(history), "epoch,\"a,b\",\"q\"\"\"\n0,1.5,2.5\n");
  EXPECT_EQ(history_to_csv(history, ';'), "epoch;a,b;\"q\"\"\"\n0;1.5;2.5\n");
}

// history.json holds the values alone, so a metric may be called anything, "seconds" or "params" included.
TEST(HistoryWriter, ValueKeysNamedLikeRunFieldsStayInHistoryJson) {
  proto::History history;
  add_epoch(history, 0, {{"seconds", 1.0}, {"params", 2.0}}, 7.0, 0);
  const Json json = JsonReader(history_to_json(history)).parse();
  EXPECT_TRUE(same_doubles(json.at("seconds").numbers(), {1.0}));
  EXPECT_TRUE(same_doubles(json.at("params").numbers(), {2.0}));
  EXPECT_TRUE(same_doubles(JsonReader(run_to_json(history)).parse().at("seconds").numbers(), {7.0}));
}

TEST(HistoryWriter, NamesTheFolderItCannotCreate) {
  const shardfit::testing::TempDir tmp("history");
  const fs::path file = tmp.path() / "a_file";
  std::ofstream(file) << "x";
  try {
    HistoryWriter writer(file / "history");
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find((file / "history").string()), std::string::npos) << error.what();
  }
  try {
    HistoryWriter writer(file);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(file.string()), std::string::npos) << error.what();
  }
}

TEST(ReadHistoryPb, NamesTheFileOnErrors) {
  const shardfit::testing::TempDir tmp("history");
  const fs::path missing = tmp.path() / "missing.pb";
  try {
    read_history_pb(missing);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(missing.string()), std::string::npos) << error.what();
  }
  const fs::path garbage = tmp.path() / "garbage.pb";
  std::ofstream(garbage, std::ios::binary) << "\xff\xff\xff\xff";
  try {
    read_history_pb(garbage);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(garbage.string()), std::string::npos) << error.what();
  }
}

// Python's json module reads NaN / Infinity as shardfit writes them, and the script finds the four files agree
// (and, where pandas is installed, that history.json makes a DataFrame with one row per epoch).
TEST(HistoryWriter, PythonReadsTheSameHistory) {
  const char* python_env = std::getenv("SHARDFIT_PYTHON");
  const std::string python = python_env != nullptr ? python_env : "/usr/bin/python3";
  if (::access(python.c_str(), X_OK) != 0) GTEST_SKIP() << python << " not found";
  const char* source_env = std::getenv("SHARDFIT_SOURCE_DIR");
  const fs::path script = fs::path(source_env != nullptr ? source_env : ".") / "tests/python/read_history.py";
  ASSERT_TRUE(fs::exists(script)) << script << " (set SHARDFIT_SOURCE_DIR to the source tree)";

  const shardfit::testing::TempDir tmp("history");
  const proto::History history = sample_history();
  HistoryWriter(tmp.path()).write(history);
  const std::string command = "'" + python + "' '" + script.string() + "' '" + tmp.path().string() + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) output.append(buffer, n);
  const int status = ::pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;

  std::map<std::string, std::vector<double>> lists;
  std::map<std::string, std::string> params;
  std::string epochs;
  std::string pb_line;
  std::string pandas_line;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "key" || kind == "seconds" || kind == "samples_per_second") {
      std::string key = kind;
      if (kind == "key") words >> key;
      std::vector<double>& values = lists[key];
      for (std::string word; words >> word;) values.push_back(std::strtod(word.c_str(), nullptr));
    } else if (kind == "param") {
      std::string name;
      words >> name;
      std::getline(words >> std::ws, params[name]);
    } else if (kind == "epoch") {
      std::getline(words >> std::ws, epochs);
    } else if (kind == "pb") {
      pb_line = line;
    } else if (kind == "pandas") {
      pandas_line = line;
    }
  }
  EXPECT_EQ(epochs, "0 1 2");
  for (const std::string key : {"loss", "accuracy", "learning_rate", "val_loss", "val_accuracy"}) {
    EXPECT_TRUE(same_doubles(lists[key], padded_values_of(history, key))) << key;
  }
  EXPECT_EQ(lists.size(), 7u) << output;
  EXPECT_TRUE(same_doubles(lists["seconds"], {1.25, 0.1, 2.0}));
  EXPECT_TRUE(same_doubles(lists["samples_per_second"], {1437.6, 1e300, kInf}));
  EXPECT_EQ(params["train_samples"], "1797");
  EXPECT_EQ(params["job"], history.params().job());
  // Reading history.pb from Python needs python3-protobuf and protoc; say which happened.
  std::printf("read_history.py: %s\n", pb_line.c_str());
  EXPECT_FALSE(pb_line.empty()) << output;
  // pd.DataFrame(json.load(open("history.json"))): one row per epoch (python3-pandas, installed by setup.sh).
  std::printf("read_history.py: %s\n", pandas_line.c_str());
  EXPECT_EQ(pandas_line, "pandas 3 rows") << output;
}

// ---- atomicity under SIGKILL ----

constexpr int kKeysPerEpoch = 8;

// A value that no two (epoch, key) pairs share and that needs all 17 digits, so a torn number cannot pass.
double expected_value(int64_t epoch, int key) { return std::sqrt(static_cast<double>(epoch * 16 + key + 2)); }
std::string key_name(int key) { return (key % 2 == 0 ? "metric_" : "val_metric_") + std::to_string(key); }
// Odd keys are val_ keys, present on odd epochs only (validation_freq 2).
bool has_key(int64_t epoch, int key) { return key % 2 == 0 || epoch % 2 == 1; }

// The child: continues the history found on disk (as resume would) one epoch per write, until it is killed.
[[noreturn]] void write_until_killed(const fs::path& dir) {
  try {
    const HistoryWriter writer(dir);
    proto::History history = read_history_pb(writer.pb_path());
    while (true) {
      const int64_t epoch = history.epochs_size();
      std::map<std::string, double> values;
      for (int key = 0; key < kKeysPerEpoch; ++key) {
        if (has_key(epoch, key)) values[key_name(key)] = expected_value(epoch, key);
      }
      add_epoch(history, epoch, values, expected_value(epoch, 100), expected_value(epoch, 200));
      writer.write(history);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "child: %s\n", error.what());
    std::fflush(stderr);
    ::_exit(2);
  }
}

// Each file on its own must be whole; returns its epoch count (the length of its lists: one entry per epoch).
int64_t check_json(const fs::path& path) {
  const Json json = JsonReader(read_text(path)).parse();
  EXPECT_EQ(json.kind, Json::Kind::kObject) << path;
  int64_t count = 0;
  if (!json.members.empty()) count = static_cast<int64_t>(json.members.front().second.items.size());
  for (int key = 0; key < kKeysPerEpoch; ++key) {
    // A key appears once any epoch has it; from then on its list holds every epoch, NaN where it is missing.
    bool present = false;
    std::vector<double> expected;
    for (int64_t e = 0; e < count; ++e) {
      present = present || has_key(e, key);
      expected.push_back(has_key(e, key) ? expected_value(e, key) : kNaN);
    }
    if (!present) expected.clear();
    const std::vector<double> actual =
        json.has(key_name(key)) ? json.at(key_name(key)).numbers() : std::vector<double>{};
    EXPECT_TRUE(same_doubles(actual, expected)) << path << " " << key_name(key);
  }
  return count;
}

// run.json of the same writes: its epoch indices and seconds; returns its epoch count.
int64_t check_run_json(const fs::path& path) {
  const Json run = JsonReader(read_text(path)).parse();
  const std::vector<double> epochs = run.at("epoch").numbers();
  const auto count = static_cast<int64_t>(epochs.size());
  std::vector<double> seconds;
  for (int64_t e = 0; e < count; ++e) {
    EXPECT_EQ(epochs[e], static_cast<double>(e));
    seconds.push_back(expected_value(e, 100));
  }
  EXPECT_TRUE(same_doubles(run.at("seconds").numbers(), seconds)) << path;
  return count;
}

int64_t check_pb(const fs::path& path) {
  const proto::History history = read_history_pb(path);
  for (int64_t e = 0; e < history.epochs_size(); ++e) {
    const proto::EpochRecord& record = history.epochs(static_cast<int>(e));
    EXPECT_EQ(record.epoch(), e);
    EXPECT_TRUE(same_double(record.seconds(), expected_value(e, 100)));
    int present = 0;
    for (int key = 0; key < kKeysPerEpoch; ++key) {
      if (!has_key(e, key)) continue;
      ++present;
      const auto found = record.values().find(key_name(key));
      EXPECT_TRUE(found != record.values().end() && same_double(found->second, expected_value(e, key)));
    }
    EXPECT_EQ(record.values_size(), present);
  }
  return history.epochs_size();
}

int64_t check_csv(const fs::path& path) {
  const std::string text = read_text(path);
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n') << "a csv must end with a whole row";
  std::istringstream lines(text);
  std::string header;
  std::getline(lines, header);
  std::vector<std::string> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(line);
  const auto count = static_cast<int64_t>(rows.size());
  // The columns are the keys any row has, sorted: metric_0, 2, 4, 6, then val_metric_1, 3, 5, 7 once an odd
  // epoch is in the file (a file that holds epoch 0 alone has no val_ column).
  std::vector<int> column_keys;
  std::string expected_header = "epoch";
  for (const int key : {0, 2, 4, 6, 1, 3, 5, 7}) {
    bool present = false;
    for (int64_t e = 0; e < count; ++e) present = present || has_key(e, key);
    if (!present) continue;
    column_keys.push_back(key);
    expected_header += ',';  // not "," + name: GCC 12 warns a false -Wrestrict on that once inlined
    expected_header += key_name(key);
  }
  EXPECT_EQ(header, expected_header) << "with " << count << " rows";
  for (int64_t row = 0; row < count; ++row) {
    const std::string& line = rows[static_cast<size_t>(row)];
    std::vector<std::string> fields;
    std::istringstream cells(line);
    for (std::string cell; std::getline(cells, cell, ',');) fields.push_back(cell);
    if (!line.empty() && line.back() == ',') fields.emplace_back();
    EXPECT_EQ(fields.size(), 1u + column_keys.size()) << line;
    if (fields.size() != 1u + column_keys.size()) continue;
    EXPECT_EQ(fields[0], std::to_string(row));
    for (size_t c = 0; c < column_keys.size(); ++c) {
      const int key = column_keys[c];
      if (has_key(row, key)) {
        EXPECT_TRUE(same_double(std::strtod(fields[1 + c].c_str(), nullptr), expected_value(row, key))) << line;
      } else {
        EXPECT_EQ(fields[1 + c], "") << line;
      }
    }
  }
  return count;
}

// The states the kill test lands in by chance, each written once on purpose: 0 epochs, epoch 0 alone (no val_ column
// yet), then the first epochs with validation.
TEST(HistoryWriter, EveryEpochCountLeavesValidFiles) {
  const shardfit::testing::TempDir tmp("history");
  const HistoryWriter writer(tmp.path());
  proto::History history;
  history.mutable_params()->set_epochs(4);
  for (int64_t epoch = 0; epoch <= 4; ++epoch) {
    writer.write(history);
    EXPECT_EQ(check_json(tmp.path() / "history.json"), epoch);
    EXPECT_EQ(check_run_json(tmp.path() / "run.json"), epoch);
    EXPECT_EQ(check_pb(tmp.path() / "history.pb"), epoch);
    EXPECT_EQ(check_csv(tmp.path() / "history.csv"), epoch);
    std::map<std::string, double> values;
    for (int key = 0; key < kKeysPerEpoch; ++key) {
      if (has_key(epoch, key)) values[key_name(key)] = expected_value(epoch, key);
    }
    add_epoch(history, epoch, values, expected_value(epoch, 100), expected_value(epoch, 200));
  }
}

TEST(HistoryWriter, SigkillAtAnyMomentLeavesValidFiles) {
  const shardfit::testing::TempDir tmp("history");
  proto::History first;
  first.mutable_params()->set_epochs(1000000);
  HistoryWriter(tmp.path()).write(first);  // the files of "no epoch done yet"

  std::mt19937 random(20240611);
  std::uniform_int_distribution<int> pause_us(0, 25000);
  int64_t last_count = 0;
  for (int round = 0; round < 30; ++round) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) write_until_killed(tmp.path());
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(random)));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the writer failed before it was killed";

    const fs::path dir = tmp.path();
    const int64_t json_count = check_json(dir / "history.json");
    const int64_t run_count = check_run_json(dir / "run.json");
    const int64_t pb_count = check_pb(dir / "history.pb");
    const int64_t csv_count = check_csv(dir / "history.csv");
    // The files are renamed history.json, run.json, pb, csv, and each writer continues from history.pb: each file
    // is at most one epoch ahead of the next; csv may lag pb by more when several writers in a row die between
    // the pb and the csv rename.
    EXPECT_TRUE(json_count >= run_count && run_count >= pb_count && pb_count >= csv_count && json_count - pb_count <= 1)
        << "json " << json_count << ", run " << run_count << ", pb " << pb_count << ", csv " << csv_count;
    EXPECT_GE(pb_count, last_count) << "epochs already written were lost";
    last_count = pb_count;
    if (::testing::Test::HasFailure()) break;
  }
  // Leftovers may be temporary files of killed writers, never anything else.
  int leftovers = 0;
  for (const auto& entry : fs::directory_iterator(tmp.path())) {
    const std::string name = entry.path().filename().string();
    if (name == "history.json" || name == "run.json" || name == "history.pb" || name == "history.csv") continue;
    EXPECT_NE(name.find(".tmp."), std::string::npos) << name;
    ++leftovers;
  }
  std::printf("%lld epochs written across 30 kills; %d temporary files left by killed writers\n",
              static_cast<long long>(last_count), leftovers);
}

}  // namespace
}  // namespace shardfit
