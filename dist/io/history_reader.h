// Reads a history back from any of the files the history writer leaves (history.pb, history.json with the run.json
// beside it, history.csv) or from their folder, for `shardfit plot`. Rank 0 calls it; no MPI here.
#pragma once

#include <filesystem>

#include "proto/shardfit.pb.h"

namespace shardfit {

// `path` is a history folder (history.pb is read when it is there, else history.json, else history.csv) or one of
// the three files, told apart by extension. What each gives:
//  1. history.pb: everything.
//  2. history.json: the values, epochs numbered 0, 1, ... in list order; a NaN entry means "no value that epoch"
//     (history.json pads with NaN, so a genuinely NaN loss reads as missing too: history.pb keeps the difference).
//     The params and the diagnosis come from run.json in the same folder, when it is there.
//  3. history.csv: the values (an empty field: no value; "nan" a NaN), epochs from the epoch column.
// Throws Error naming the path and what was expected when it is none of these, is missing, or does not parse.
proto::History read_history_any(const std::filesystem::path& path);

}  // namespace shardfit
