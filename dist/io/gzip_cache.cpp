// The decompressed cache of gzip data files: its folder, its names, the lock, and the write-fsync-rename that
// publishes a whole file (see gzip_cache.h for the design).
#include "dist/io/gzip_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <utility>

#include "dist/io/byte_hash.h"
#include "dist/io/inflate.h"
#include "dist/io/mapped_file.h"
#include "kernels/error.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

constexpr const char* kCacheHint =
    "set SHARDFIT_CACHE_DIR to a folder of your own with room for the inflated data (about 2-10x the .gz), e.g. "
    "node-local scratch; with mpirun, pass it on with -x SHARDFIT_CACHE_DIR";
// Another process may hold the lock while it inflates a large file; past this it is presumed stuck.
constexpr auto kLockPatience = std::chrono::minutes(10);

// Closes a file descriptor however the function leaves.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  FileDescriptor& operator=(FileDescriptor&&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting the error close() gives (a delayed write error on some file systems).
  int close_now() {
    const int status = ::close(fd_);
    fd_ = -1;
    return status;
  }

 private:
  int fd_;
};

[[noreturn]] void fail_cache(const std::string& what, const fs::path& path, int err) {
  SF_FAIL(cat("gzip cache: cannot ", what, " ", path.string(), ": ", std::strerror(err)), kCacheHint);
}

void write_all(int fd, const char* data, size_t bytes, const fs::path& path) {
  while (bytes > 0) {
    const ssize_t n = ::write(fd, data, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_cache("write", path, errno);
    }
    data += n;
    bytes -= static_cast<size_t>(n);
  }
}

// "train-images-idx3-ubyte" for ".../train-images-idx3-ubyte.gz": the cache file keeps the name the format was
// told from, so a human can tell what it holds.
std::string stem_of(const std::string& shown) {
  std::string name = fs::path(shown).filename().string();
  if (name.size() > 3 && (name.ends_with(".gz") || name.ends_with(".GZ"))) name.resize(name.size() - 3);
  return name.empty() ? std::string("data") : name;
}

// Takes the lock of one cache file, waiting for a process that holds it (it is inflating that file).
FileDescriptor lock_cache_entry(const fs::path& lock_path) {
  FileDescriptor lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (lock.get() < 0) fail_cache("create the lock file", lock_path, errno);
  const auto deadline = std::chrono::steady_clock::now() + kLockPatience;
  while (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    // Some network file systems have no flock: go on unlocked; the rename still publishes only whole files.
    if (err == ENOLCK || err == EOPNOTSUPP) break;
    if (err != EWOULDBLOCK && err != EINTR) fail_cache("lock", lock_path, err);
    if (std::chrono::steady_clock::now() > deadline) {
      SF_FAIL(cat("gzip cache: another process has held the lock ", lock_path.string(), " for more than ",
                  std::chrono::duration_cast<std::chrono::seconds>(kLockPatience).count(),
                  " s: expected it to finish inflating and let go"),
              "find it with `fuser -v LOCKFILE` and end it, or set SHARDFIT_CACHE_DIR to another folder");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return lock;
}

// Inflates gz into a temporary file beside `target` and renames it into place once it is whole and on disk.
void build_cache_entry(const MappedFile& gz, const std::string& shown, const fs::path& target) {
  std::random_device entropy;
  const fs::path temporary =
      target.parent_path() / cat(".", target.filename().string(), ".tmp.", ::getpid(), ".", entropy());
  FileDescriptor out(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (out.get() < 0) fail_cache("create", temporary, errno);
  try {
    // The compressed bytes are copied out of the mapping under the SIGBUS guard (a .gz cut short while it is read
    // becomes an error naming it); the copy owns nothing, as the guard requires.
    const auto read = [&](int64_t offset, char* dst, size_t bytes) {
      guard_data_faults([&] { std::memcpy(dst, gz.data() + offset, bytes); });
    };
    inflate_gzip(gz.bytes(), read, shown,
                 [&](const char* data, size_t bytes) { write_all(out.get(), data, bytes, temporary); });
    if (::fsync(out.get()) != 0) fail_cache("write (fsync)", temporary, errno);
    if (out.close_now() != 0) fail_cache("write (close)", temporary, errno);
    if (::rename(temporary.c_str(), target.c_str()) != 0) fail_cache("rename into place", target, errno);
  } catch (...) {
    ::unlink(temporary.c_str());
    throw;
  }
  // The rename itself reaches the disk with the folder's own fsync; without it a crash could lose the name.
  const FileDescriptor folder(::open(target.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (folder.get() >= 0) ::fsync(folder.get());
}

}  // namespace

fs::path gzip_cache_dir() {
  fs::path dir;
  const char* set = std::getenv("SHARDFIT_CACHE_DIR");
  if (set != nullptr && *set != '\0') {
    dir = set;
  } else {
    const char* tmp = std::getenv("TMPDIR");
    dir = fs::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") / cat("shardfit-cache-", ::getuid());
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) fail_cache("create the folder", dir, errno);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) fail_cache("examine the folder", dir, errno);
  if (!S_ISDIR(st.st_mode)) {
    SF_FAIL(cat("gzip cache: ", dir.string(), " is not a folder: expected a folder for inflated data files"),
            kCacheHint);
  }
  // A folder others may write could hold a planted file under the name a job is about to read as data.
  if (st.st_uid != ::getuid() || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    SF_FAIL(cat("gzip cache: the folder ", dir.string(), " is owned by uid ", st.st_uid, " with mode ", mode,
                ": expected a folder of your own (uid ", ::getuid(), ") that no one else may write"),
            kCacheHint);
  }
  return dir;
}

fs::path inflated_copy(const MappedFile& gz, const std::string& shown) {
  // The name says which .gz the file came from: its size, modification time and sampled fingerprint. A .gz that
  // changes in any of them gets a file of its own; the old one stays until removed (the folder is a cache).
  uint64_t fingerprint = 0;
  guard_data_faults([&] { fingerprint = gz.sampled_fingerprint(); });
  const int64_t key_fields[] = {gz.bytes(), gz.modified_ns(), static_cast<int64_t>(fingerprint)};
  const uint64_t key = mix_bytes(kByteHashStart, reinterpret_cast<const std::byte*>(key_fields), sizeof key_fields);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(key));

  const fs::path dir = gzip_cache_dir();
  fs::path target = dir / cat(hex, "-", stem_of(shown));
  const FileDescriptor lock = lock_cache_entry(dir / cat(".", target.filename().string(), ".lock"));
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return target;  // built before: by a peer rank
  build_cache_entry(gz, shown, target);
  return target;
}

}  // namespace shardfit
