// A data file mapped read-only into memory, and what the job does when that file changes underneath the mapping.
// Not a format reader (dist/io/dataset.cpp parses the bytes) and not a general file API.
//
// Design notes:
//  1. Rows are read straight from the page cache through the mapping, so a rank touches only the rows it gathers.
//     The price: when the file is truncated while mapped (a copy, np.save or a `>` redirect rewriting it in place),
//     the next read of a page past the new end raises SIGBUS. A handler maps the faulting address back to the file.
//     Reads made through run_guarded (every ArrayFile read: rows, values, checks) jump back there and become an
//     ordinary shardfit::Error naming the file, so the usual failure path ends every rank (agreed at setup,
//     Comm::abort inside a step). A fault in any other read of a mapping (the CSV line index at open) writes the
//     same message with async-signal-safe calls and ends the process with _exit(1); the launcher ends the other
//     ranks. A fault at any other address goes to the handler that was there before (Open MPI's, or the default).
//  2. A same-size rewrite raises no fault: the pages simply hold the new bytes. changed_on_disk() compares the open
//     file's size and modification time with those seen when it was mapped; the trainer asks at every epoch end and
//     before every checkpoint, in an agreed phase, so such a change stops the job before it records anything
//     computed from it.
//  3. A file replaced by rename (write a copy, mv it over) changes nothing for the job: the mapping keeps the old
//     file alive and every read sees the bytes the job started with. It is not reported.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>

namespace shardfit {

class MappedFile {
 public:
  // resolved: the path to open; shown: the path as the user wrote it (every message uses it); hint: the hint of the
  // error raised when the file cannot be opened. on_open, when given, runs once the file is open and before it is
  // examined or mapped: dataset.cpp decides the format there, so a missing file reads as missing (not as a format
  // error for a typo such as "x.npz"), yet a folder with no data-file name gets the format error. What it throws
  // propagates, the file closed.
  MappedFile(const std::filesystem::path& resolved, const std::string& shown, const std::string& hint,
             const std::function<void()>& on_open = {});
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  std::string_view text() const { return {reinterpret_cast<const char*>(data_), static_cast<size_t>(bytes_)}; }
  const std::string& shown() const { return shown_; }
  // The file's modification time when it was mapped, in nanoseconds since the epoch.
  int64_t modified_ns() const { return mtime_ns_; }

  // A 64-bit hash of the file's size, its first 64 KiB (the header and the first rows), its last 4 KiB and 64 blocks
  // of 4 KiB spread evenly over the rest: about 330 KiB read whatever the file's size. Two copies of one data set
  // that differ in shape, in their first or last rows, or anywhere a sampled block falls get different values; two
  // copies that differ only between the samples (one changed value in a big file) do not. A full checksum would
  // catch those too but reads every byte on every rank at every start (see docs/data.md for the measurements).
  uint64_t sampled_fingerprint() const;

  // Empty when the file still has the size and modification time it had when mapped, else what changed
  // ("its size went from 460928 to 0 bytes"). One fstat: cheap enough for every epoch.
  std::string changed_on_disk() const;

 private:
  std::string shown_;
  const std::byte* data_ = nullptr;
  int64_t bytes_ = 0;
  int fd_ = -1;  // kept open: fstat sees the mapped file itself, whatever is renamed over its path
  int64_t mtime_ns_ = 0;
  int slot_ = -1;  // this mapping's entry in the SIGBUS handler's table, or -1
};

// Runs body(context); a SIGBUS raised by its reads of a registered mapping becomes a shardfit::Error naming the file
// (thrown from here). body must own nothing that needs destroying at the faulting read: the jump skips its frames.
// Nests; costs a few instructions (no system call), so it may wrap every read of a row.
void run_guarded(void (*body)(void*), void* context);

template <typename Body>
void guard_data_faults(Body&& body) {
  run_guarded([](void* context) { (*static_cast<std::remove_reference_t<Body>*>(context))(); }, &body);
}

// The rank the SIGBUS message names (the handler cannot ask MPI); -1, the default, prints no rank.
void set_rank_for_data_faults(int rank);

}  // namespace shardfit
