// The decompressed cache behind gzip-compressed data files (x.npy.gz, train-images-idx3-ubyte.gz): each .gz is
// inflated once into a cache file that is then memory-mapped like any uncompressed data file. Not a general cache.
//
// Design notes (measurements in docs/data.md, "Compressed data files"):
//  1. gzip cannot seek: a rank that wants row r must inflate everything before it, and a shuffled epoch gives every
//     rank rows from the whole file. Streaming would make each rank inflate the whole file into memory of its own at
//     every start (P copies per host); the cache inflates it once per host (per cache folder), the ranks of a host
//     then share its pages through the page cache, read only the rows they gather, and every check made on mapped
//     files (fingerprints, value checks, a file cut short under the job) applies unchanged.
//  2. A cache file is never half-written: it is inflated into a temporary name in the cache folder, fsync'ed and
//     renamed into place (atomic), the folder fsync'ed too. Its name carries the .gz's size, modification time and
//     sampled fingerprint, so a changed .gz gets a new cache file instead of reading a stale one.
//  3. One process inflates, the others wait: the ranks of a job (and any other job) take an flock on
//     "<cache name>.lock" before looking; the first builds the file, the others find it. The kernel drops the lock
//     of a process that dies, so a crashed rank leaves no stale lock, only a stale temporary file at worst.
//  4. The input is only read. The cache folder is per user (mode 0700): another user cannot plant a cache file
//     that a job would read as data.
#pragma once

#include <filesystem>
#include <string>

namespace shardfit {

class MappedFile;

// The cache folder: $SHARDFIT_CACHE_DIR when set and not empty, else $TMPDIR/shardfit-cache-<uid>, else
// /tmp/shardfit-cache-<uid>. Created (mode 0700) when missing.
std::filesystem::path gzip_cache_dir();

// The path of the inflated copy of `gz` (mapped; `shown` names it in errors), building it first when it is not
// there. Fails naming `shown` on a corrupt or truncated gzip stream, and naming the cache folder when it cannot be
// written (full disk, permissions), with a hint to set SHARDFIT_CACHE_DIR.
std::filesystem::path inflated_copy(const MappedFile& gz, const std::string& shown);

}  // namespace shardfit
