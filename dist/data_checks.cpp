// Agreed checks on the data files: the same on every rank, finite, unchanged (see data_checks.h).
#include "dist/data_checks.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>

#include "dist/io/byte_hash.h"
#include "dist/io/mapped_file.h"
#include "dist/sharding.h"
#include "kernels/error.h"

namespace shardfit {

namespace {

// "x.npy (npy, float32, shape (1797, 64)), 460928 bytes, sampled fingerprint 0x..."
std::string description(const ArrayFile& file) {
  char fingerprint[19];
  std::snprintf(fingerprint, sizeof fingerprint, "0x%016" PRIx64, file.sampled_fingerprint());
  return cat(file.describe(), ", ", file.file_bytes(), " bytes, sampled fingerprint ", fingerprint);
}

// Rank r's text is one line per file, "role<TAB>description".
std::vector<std::pair<std::string, std::string>> lines_of(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    const size_t tab = line.find('\t');
    lines.emplace_back(line.substr(0, tab), tab == std::string::npos ? std::string() : line.substr(tab + 1));
    start = end + 1;
  }
  return lines;
}

// "rank 3", "ranks 1, 2 and 5", "ranks 1, 2, 3, 4, 5, 6, 7, 8 and 9 more"
std::string ranks_text(const std::vector<int>& ranks) {
  constexpr size_t kShown = 8;
  if (ranks.size() == 1) return cat("rank ", ranks.front());
  std::string text = "ranks ";
  const size_t shown = std::min(ranks.size(), kShown);
  for (size_t i = 0; i < shown; ++i) {
    if (i > 0) text += i + 1 == ranks.size() ? " and " : ", ";
    text += cat(ranks[i]);
  }
  if (ranks.size() > kShown) text += cat(" and ", ranks.size() - kShown, " more");
  return text;
}

// On rank 0: what differs from rank 0's files, file by file, with the ranks on each side.
std::string differences(const std::vector<std::string>& texts) {
  const auto reference = lines_of(texts.front());
  std::string message;
  for (size_t i = 0; i < reference.size(); ++i) {
    const auto& [role, expected] = reference[i];
    std::map<std::string, std::vector<int>> others;  // description -> the ranks that have it
    for (size_t r = 1; r < texts.size(); ++r) {
      const auto lines = lines_of(texts[r]);
      const std::string seen = i < lines.size() && lines[i].first == role ? lines[i].second : "no such file";
      if (seen != expected) others[seen].push_back(static_cast<int>(r));
    }
    for (const auto& [seen, ranks] : others) {
      message += cat(message.empty() ? "" : "; ", role, " is ", seen, " on ", ranks_text(ranks), " but ", expected,
                     " on rank 0");
    }
  }
  return message;
}

}  // namespace

void add_data_files(std::vector<DataFile>& files, const Dataset& data, const std::string& role) {
  files.push_back({role + " x", data.x()});
  files.push_back({role + " y", data.y()});
}

void agree_on_data_files(Comm& comm, const std::vector<DataFile>& files) {
  set_rank_for_data_faults(comm.rank());
  std::string text;
  run_agreed(comm, [&] {
    for (const DataFile& data : files) text += cat(text.empty() ? "" : "\n", data.role, "\t", description(data.file));
  });
  const std::vector<int64_t> hashes = comm.allgather(static_cast<int64_t>(hash_text(text)));
  if (std::all_of(hashes.begin(), hashes.end(), [&](int64_t h) { return h == hashes.front(); })) return;
  const std::vector<std::string> texts = comm.gather_text_to_root(text);
  run_agreed(comm, [&] {
    if (!comm.is_root()) return;
    std::string found = differences(texts);
    if (found.empty()) found = "the files are described differently on some ranks";  // a hash collision of texts
    SF_FAIL(cat("the ranks do not read the same data: ", found, ": expected identical data files on every rank"),
            "each rank opens the files through its own path (working directory, node-local copy): a stale or "
            "partial copy? copy the data again or put it on a file system every node shares, and compare the "
            "copies with sha256sum");
  });
}

void check_data_values(Comm& comm, const std::vector<DataFile>& files) {
  run_agreed(comm, [&] {
    for (const DataFile& data : files) {
      const Slice share = slice_of(data.file.rows(), comm.rank(), comm.size());
      data.file.check_values(share.offset, share.count);
    }
  });
}

void check_data_unchanged(Comm& comm, const std::vector<DataFile>& files) {
  run_agreed(comm, [&] {
    for (const DataFile& data : files) {
      const std::string change = data.file.changed_on_disk();
      if (change.empty()) continue;
      SF_FAIL(cat(data.role, " file '", data.file.path(), "' changed on disk while this job was reading it (", change,
                  "): expected the data files to stay unchanged until the job ends"),
              "the rows read since the change are not the data the job started with; write new data under another "
              "name, or to a copy that you rename over the old file (the job keeps reading the version it opened)");
    }
  });
}

void fail_for_row(const Dataset& data, std::span<const int64_t> rows, const SampleError& error) {
  const auto sample = static_cast<size_t>(error.sample());
  if (sample >= rows.size()) throw error;  // not a sample of this batch: nothing better to say
  throw Error(error.where(), cat(data.y().path(), ": row ", rows[sample], ": ", error.about_value()), error.hint());
}

}  // namespace shardfit
