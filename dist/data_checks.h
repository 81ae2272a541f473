// The agreed checks every rank runs on the data before the first step and at epoch boundaries: the same files on
// every rank, no unusable value in them, no file changed under the job. Not the readers (dist/io/dataset.h).
//
// Design notes:
//  1. Each rank opens the data through its own path, so a stale copy on one node is possible (MPMD --wdir, a
//     node-local scratch copy). Ranks that disagree on row counts run different step counts and their collectives
//     stop matching, so the files are compared before anything else: rows, shape, dtype, bytes and a sampled
//     fingerprint (MappedFile::sampled_fingerprint: ~330 KiB read per file, not a full checksum that would read
//     every byte on every rank at every start). One allgather of a hash of every rank's description; only on a
//     mismatch do the descriptions travel to rank 0, which names the file and the ranks.
//  2. Values are checked once at setup, each rank its contiguous share of every file's rows (as prepare_labels
//     checks class ids): together one pass over the data, split P ways.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "dist/io/dataset.h"
#include "kernels/error.h"

namespace shardfit {

// One data file as the job uses it; role names it in messages ("train x", "validation y", "test x").
struct DataFile {
  std::string role;
  ArrayFile file;
};

// The x and y files of a data set, roles "<role> x" and "<role> y".
void add_data_files(std::vector<DataFile>& files, const Dataset& data, const std::string& role);

// Collective: fails on every rank (the same AgreedFailure) when any rank's file differs from rank 0's in rows,
// shape, dtype, bytes or sampled fingerprint, naming the file and the ranks on each side.
void agree_on_data_files(Comm& comm, const std::vector<DataFile>& files);

// Collective: each rank checks its share of every file's rows (ArrayFile::check_values); the lowest rank that finds
// a bad value stops every rank with its message.
void check_data_values(Comm& comm, const std::vector<DataFile>& files);

// Collective: fails on every rank when a file was written to since it was opened (see dist/io/mapped_file.h).
void check_data_unchanged(Comm& comm, const std::vector<DataFile>& files);

// Rethrows a kernel's error about one sample as one about its row of data's label file.
[[noreturn]] void fail_for_row(const Dataset& data, std::span<const int64_t> rows, const SampleError& error);

// Not collective. Runs step() (a model call on the batch gathered from data's `rows`, in that order); a kernel
// error about one sample of the batch is rethrown naming data's label file and that sample's global row
// ("y.npy: row 1234: ...") instead of its position in this rank's batch.
template <typename Step>
auto naming_rows(const Dataset& data, std::span<const int64_t> rows, Step&& step) -> decltype(step()) {
  try {
    return step();
  } catch (const SampleError& e) {
    fail_for_row(data, rows, e);
  }
}

}  // namespace shardfit
