// Writes the history of a fit (history.json, run.json, history.pb, history.csv) after every epoch, each file
// atomically, so a job killed at any moment leaves valid files for the epochs done. Rank 0 calls it; it only
// serialises, no MPI here.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "dist/io/format.h"  // json_number, which the history files' numbers are written with
#include "proto/shardfit.pb.h"

namespace shardfit {

// The files of one history folder, named in this one place: the writer, fit's output checks, the commands' output
// checks and the history reader take the names from here. loss_svg is fit's plot of the loss (outputs.plot), which
// goes beside the four files HistoryWriter writes.
struct HistoryFiles {
  std::filesystem::path json;      // history.json
  std::filesystem::path run_json;  // run.json
  std::filesystem::path pb;        // history.pb
  std::filesystem::path csv;       // history.csv
  std::filesystem::path loss_svg;  // loss.svg
};

inline HistoryFiles history_files(const std::filesystem::path& dir) {
  return {dir / "history.json", dir / "run.json", dir / "history.pb", dir / "history.csv", dir / "loss.svg"};
}

// One history folder. write() replaces all four files whole, one after the other (history.json, run.json, pb, csv),
// each through
// `<name>.tmp.<pid>` + fsync + rename + fsync of the folder. A kill between two renames leaves files that are each
// valid but may lag one another (json newest, csv oldest). A kill inside one leaves a stray .tmp file, never a torn
// target.
class HistoryWriter {
 public:
  // Creates `dir` (and its parents) when missing; throws Error naming it when that fails or it is not a folder.
  explicit HistoryWriter(std::filesystem::path dir);

  // Strings that are not UTF-8 (a Latin-1 job path) are written with U+FFFD for each odd byte, in all three
  // files: proto3 requires UTF-8, and Python's protobuf rejects the whole file otherwise.
  void write(const proto::History& history) const;

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path json_path() const { return history_files(dir_).json; }
  std::filesystem::path run_json_path() const { return history_files(dir_).run_json; }
  std::filesystem::path pb_path() const { return history_files(dir_).pb; }
  std::filesystem::path csv_path() const { return history_files(dir_).csv; }

 private:
  std::filesystem::path dir_;
};

// history.json: exactly Keras's `history.history` dict, {"loss": [...], "val_loss": [...], ...}, and nothing else,
// so that `pandas.DataFrame(json.load(f))` is a table with one row per epoch. Every list holds one entry per epoch:
// where an epoch lacks a key (validation_freq > 1: Keras's val_ lists are shorter) the entry is NaN. Keys sorted.
// Doubles are written as the shortest text that reads back to the same double (json_number); NaN and infinities as
// NaN / Infinity / -Infinity — not strict JSON, but what Python's json module writes and reads back (JavaScript's
// JSON.parse rejects them).
std::string history_to_json(const proto::History& history);

// run.json: what describes the run rather than the epochs' values: "params" (ranks, batch, steps, job ...),
// "epoch" (the 0-based indices), "seconds" and "samples_per_second" per epoch, "peak_rss_bytes" (one per rank, when
// the history has them) and, once fit has ended, "diagnosis" (the verdict). Keys sorted at every level; numbers as in
// history.json. history.pb holds all of both files.
std::string run_to_json(const proto::History& history);

// history.csv, Keras CSVLogger style: header `epoch` + the sorted union of the value keys; one row per epoch with
// its 0-based index; a value the epoch lacks is an empty field; NaN / inf / -inf written as Python's str() does.
std::string history_to_csv(const proto::History& history, char separator = ',');

// Replaces `path` with `bytes` so that a reader (or a crash) sees the old or the new file, never a mix.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

// Reads history.pb (for tests and for resume). Throws Error naming the file when it cannot be read or does not
// parse.
// Serialises a message with maps written in key order, so the same values always give the same bytes (a resumed
// run's history.pb and checkpoint equal an uninterrupted run's).
std::string serialize_deterministic(const google::protobuf::MessageLite& message);

proto::History read_history_pb(const std::filesystem::path& path);

}  // namespace shardfit
