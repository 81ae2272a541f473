// read_history_any: the history a fit wrote reads back the same from its folder, history.pb, history.json (+ run.json)
// and history.csv, as `shardfit plot` needs; anything else is refused naming the path and what was expected.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>

#include "dist/io/history_reader.h"
#include "dist/io/history_writer.h"
#include "kernels/error.h"
#include "tests/support/temp_dir.h"

namespace shardfit {
namespace {

namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Four epochs, validation every second one (val_ keys in epochs 1 and 3 only), a diverged loss in epoch 2.
proto::History written_history() {
  proto::History history;
  history.mutable_params()->set_epochs(4);
  history.mutable_params()->set_world_size(2);
  for (int e = 0; e < 4; ++e) {
    proto::EpochRecord& record = *history.add_epochs();
    record.set_epoch(e);
    record.set_seconds(0.5 + e);
    auto& values = *record.mutable_values();
    values["loss"] = 1.0 / (e + 1);
    values["accuracy"] = 0.1 * e + 1.0 / 3.0;
    if (e % 2 == 1) {
      values["val_loss"] = 0.1 + 0.2 * e;
      values["val_accuracy"] = 5e-324 * (e + 1);
    }
  }
  history.mutable_diagnosis()->set_verdict("still_improving");
  history.mutable_diagnosis()->set_summary("still improving: \"quoted\"\tand caf\xc3\xa9");
  history.mutable_diagnosis()->set_best_epoch(3);
  return history;
}

void expect_same_values(const proto::History& got, const proto::History& want) {
  ASSERT_EQ(got.epochs_size(), want.epochs_size());
  for (int e = 0; e < want.epochs_size(); ++e) {
    SCOPED_TRACE("epoch " + std::to_string(e));
    EXPECT_EQ(got.epochs(e).epoch(), want.epochs(e).epoch());
    EXPECT_EQ(got.epochs(e).values_size(), want.epochs(e).values_size());
    for (const auto& [key, value] : want.epochs(e).values()) {
      const auto found = got.epochs(e).values().find(key);
      ASSERT_NE(found, got.epochs(e).values().end()) << key;
      EXPECT_EQ(found->second, value) << key;  // every file round-trips the doubles exactly
    }
  }
}

std::string error_of(const fs::path& path) {
  try {
    read_history_any(path);
  } catch (const Error& error) {
    return std::string(error.what()) + "\nhint: " + error.hint();
  }
  return "(no error)";
}

TEST(HistoryReader, EveryFileTheWriterLeavesReadsBackTheSameValues) {
  const shardfit::testing::TempDir tmp("history_reader");
  const proto::History history = written_history();
  HistoryWriter(tmp.path()).write(history);

  for (const char* name : {"", "history.pb", "history.json", "history.csv"}) {
    SCOPED_TRACE(*name != '\0' ? name : "the folder");
    const proto::History read = read_history_any(*name != '\0' ? tmp.path() / name : tmp.path());
    expect_same_values(read, history);
    if (std::string(name) != "history.csv") {  // the csv holds the values alone
      EXPECT_EQ(read.diagnosis().summary(), history.diagnosis().summary());
      EXPECT_EQ(read.diagnosis().verdict(), "still_improving");
      EXPECT_EQ(read.diagnosis().best_epoch(), 3);
      EXPECT_EQ(read.params().world_size(), 2);
    }
  }
}

TEST(HistoryReader, AFolderWithoutPbFallsBackToJsonThenCsv) {
  const shardfit::testing::TempDir tmp("history_reader");
  const proto::History history = written_history();
  HistoryWriter(tmp.path()).write(history);
  fs::remove(tmp.path() / "history.pb");
  EXPECT_EQ(read_history_any(tmp.path()).diagnosis().verdict(), "still_improving") << "read from json + run.json";
  fs::remove(tmp.path() / "history.json");
  expect_same_values(read_history_any(tmp.path()), history);
  fs::remove(tmp.path() / "history.csv");
  const std::string error = error_of(tmp.path());
  EXPECT_NE(error.find(tmp.path().string()), std::string::npos) << error;
  EXPECT_NE(error.find("no history.pb, history.json or history.csv"), std::string::npos) << error;
}

TEST(HistoryReader, JsonWithoutRunJsonStillGivesTheCurves) {
  const shardfit::testing::TempDir tmp("history_reader");
  std::ofstream(tmp.path() / "history.json") << "{\"loss\": [1.0, 0.5, NaN], \"val_loss\": [NaN, 0.75, -Infinity]}";
  const proto::History read = read_history_any(tmp.path() / "history.json");
  ASSERT_EQ(read.epochs_size(), 3);
  EXPECT_EQ(read.epochs(1).values().at("val_loss"), 0.75);
  EXPECT_EQ(read.epochs(2).values().count("loss"), 0u) << "NaN is history.json's padding: no value";
  EXPECT_EQ(read.epochs(0).values().count("val_loss"), 0u);
  EXPECT_TRUE(std::isinf(read.epochs(2).values().at("val_loss")));
  EXPECT_FALSE(read.has_diagnosis());
}

TEST(HistoryReader, RefusesWhatIsNoHistoryNamingThePath) {
  const shardfit::testing::TempDir tmp("history_reader");
  const fs::path old_json = tmp.path() / "old" / "history.json";
  fs::create_directories(old_json.parent_path());
  std::ofstream(old_json) << "{\"epoch\": [0], \"loss\": [1.0], \"params\": {\"epochs\": 1}}";
  const fs::path broken = tmp.path() / "broken.json";
  std::ofstream(broken) << "{\"loss\": [1.0,\n 0.5";
  const fs::path bad_csv = tmp.path() / "bad.csv";
  std::ofstream(bad_csv) << "epoch,loss\n0,1.0\n1,abc\n";
  const fs::path text = tmp.path() / "notes.txt";
  std::ofstream(text) << "hello";
  const std::map<fs::path, std::string> cases = {
      {old_json, "\"params\" is not a list of numbers"},
      {broken, "broken.json:2: not valid JSON"},
      {bad_csv, "bad.csv:3: loss = 'abc', expected a number"},
      {text, "expected a history folder, history.pb, history.json"},
      {tmp.path() / "missing.json", "no such history"},
  };
  for (const auto& [path, expected] : cases) {
    const std::string error = error_of(path);
    EXPECT_NE(error.find(expected), std::string::npos) << error;
    EXPECT_NE(error.find(path.filename().string()), std::string::npos) << error;
  }
}

}  // namespace
}  // namespace shardfit
