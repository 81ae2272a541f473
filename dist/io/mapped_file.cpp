// Read-only file mappings and the SIGBUS handler that names the file when one is cut short (see mapped_file.h).
#include "dist/io/mapped_file.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "dist/io/byte_hash.h"
#include "kernels/error.h"

namespace shardfit {

namespace fs = std::filesystem;

namespace {

// "'data/x.npy' (resolved to /jobs/mnist/data/x.npy)", or just the quoted path when the two agree.
std::string quoted_with_resolution(const std::string& shown, const fs::path& resolved) {
  if (fs::path(shown) == resolved) return cat("'", shown, "'");
  return cat("'", shown, "' (resolved to ", resolved.string(), ")");
}

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + static_cast<int64_t>(st.st_mtim.tv_nsec);
}

// --- the SIGBUS handler's table ----------------------------------------------------------------------------------
// Fixed-size and lock-free for the reader: the handler may run at any moment, so it only loads atomics and copies
// bytes. A slot is filled (path, end) before its begin is published, and unpublished before it is reused.

struct FaultSlot {
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  int64_t bytes = 0;
  std::array<char, 1024> path{};
};

constexpr int kSlots = 256;  // mapped files alive at once; beyond that a fault is reported without the file name
std::array<FaultSlot, kSlots> g_slots;
std::mutex g_slots_mutex;  // writers only
std::atomic<int> g_rank{-1};
// Set by run_guarded on the thread that reads: where a fault in a mapping jumps back to, and what it hit.
thread_local sigjmp_buf* t_guard = nullptr;
thread_local int t_fault_slot = -1;
thread_local int64_t t_fault_offset = 0;
struct sigaction g_previous {};
std::once_flag g_installed;

void put(int fd, const char* text) {
  size_t left = std::strlen(text);
  while (left > 0) {
    const ssize_t n = ::write(fd, text, left);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    text += n;
    left -= static_cast<size_t>(n);
  }
}

void put_number(int fd, int64_t value) {
  char digits[24];
  int at = sizeof digits - 1;
  digits[at] = '\0';
  const bool negative = value < 0;
  uint64_t v = negative ? static_cast<uint64_t>(-(value + 1)) + 1 : static_cast<uint64_t>(value);
  do {
    digits[--at] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && at > 1);
  if (negative) digits[--at] = '-';
  put(fd, digits + at);
}

#define SF_STRINGIFY2(x) #x
#define SF_STRINGIFY(x) SF_STRINGIFY2(x)

void on_bus_error(int signal_number, siginfo_t* info, void* context) {
  const auto address = reinterpret_cast<uintptr_t>(info->si_addr);
  for (int index = 0; index < kSlots; ++index) {
    const FaultSlot& slot = g_slots[static_cast<size_t>(index)];
    const uintptr_t begin = slot.begin.load(std::memory_order_acquire);
    if (begin == 0 || address < begin || address >= slot.end.load(std::memory_order_relaxed)) continue;
    if (t_guard != nullptr) {
      // A read inside run_guarded: the fault was raised by that read's own access (SIGBUS from a mapping is
      // synchronous), in code that holds no lock, so jumping back out of it is safe.
      t_fault_slot = index;
      t_fault_offset = static_cast<int64_t>(address - begin);
      siglongjmp(*t_guard, 1);
    }
    // The same shape as format_error: "error on rank R (where): message" and a hint line.
    const int rank = g_rank.load(std::memory_order_relaxed);
    put(STDERR_FILENO, "error");
    if (rank >= 0) {
      put(STDERR_FILENO, " on rank ");
      put_number(STDERR_FILENO, rank);
    }
    put(STDERR_FILENO, " (dist/io/mapped_file.cpp:" SF_STRINGIFY(__LINE__) "): data file '");
    put(STDERR_FILENO, slot.path.data());
    put(STDERR_FILENO, "' changed on disk while this job was reading it: it is shorter than the ");
    put_number(STDERR_FILENO, slot.bytes);
    put(STDERR_FILENO, " bytes it had when the job opened it (reading byte ");
    put_number(STDERR_FILENO, static_cast<int64_t>(address - begin));
    put(STDERR_FILENO,
        " failed with SIGBUS): expected the data files to stay unchanged until the job ends\n"
        "hint: write new data under another name, or to a copy that you rename over the old file "
        "(the job keeps reading the version it opened)\n");
    ::_exit(1);
  }
  // Not one of our mappings: the handler that was there before decides. Reinstalling it and returning re-runs the
  // faulting access, which faults again into that handler (or the default action: core dump).
  (void)signal_number;
  (void)context;
  ::sigaction(SIGBUS, &g_previous, nullptr);
}

void install_handler() {
  struct sigaction action {};
  action.sa_sigaction = &on_bus_error;
  // SA_NODEFER: a jump out of the handler leaves SIGBUS unblocked without saving the signal mask at every guarded
  // read (sigsetjmp(env, 0) is a few instructions, not a system call).
  action.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGBUS, &action, &g_previous);
}

int register_mapping(const std::byte* data, int64_t bytes, const std::string& shown) {
  std::call_once(g_installed, install_handler);
  const std::lock_guard<std::mutex> lock(g_slots_mutex);
  for (int i = 0; i < kSlots; ++i) {
    FaultSlot& slot = g_slots[static_cast<size_t>(i)];
    if (slot.begin.load(std::memory_order_relaxed) != 0) continue;
    const size_t length = std::min(shown.size(), slot.path.size() - 1);
    std::memcpy(slot.path.data(), shown.data(), length);
    slot.path[length] = '\0';
    slot.bytes = bytes;
    slot.end.store(reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(bytes), std::memory_order_relaxed);
    slot.begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_release);
    return i;
  }
  return -1;
}

void unregister_mapping(int index) {
  if (index < 0) return;
  const std::lock_guard<std::mutex> lock(g_slots_mutex);
  g_slots[static_cast<size_t>(index)].begin.store(0, std::memory_order_release);
}

}  // namespace

void set_rank_for_data_faults(int rank) { g_rank.store(rank, std::memory_order_relaxed); }

void run_guarded(void (*body)(void*), void* context) {
  sigjmp_buf here;
  sigjmp_buf* const outer = t_guard;
  if (sigsetjmp(here, 0) != 0) {
    t_guard = outer;
    const FaultSlot& slot = g_slots[static_cast<size_t>(t_fault_slot)];
    SF_FAIL(
        cat("data file '", slot.path.data(), "' changed on disk while this job was reading it: it is shorter than the ",
            slot.bytes, " bytes it had when the job opened it (reading byte ", t_fault_offset,
            " failed with SIGBUS): expected the data files to stay unchanged until the job ends"),
        "write new data under another name, or to a copy that you rename over the old file (the job keeps "
        "reading the version it opened)");
  }
  t_guard = &here;
  try {
    body(context);
  } catch (...) {
    t_guard = outer;
    throw;
  }
  t_guard = outer;
}

// MAP_PRIVATE + PROT_READ: pages come from the page cache on demand, so a rank reads only what it gathers, and
// ranks on one node share the cached pages.
MappedFile::MappedFile(const fs::path& resolved, const std::string& shown, const std::string& hint,
                       const std::function<void()>& on_open)
    : shown_(shown) {
  fd_ = ::open(resolved.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    const int err = errno;
    SF_FAIL(cat("cannot open data file ", quoted_with_resolution(shown, resolved), ": ", std::strerror(err)), hint);
  }
  if (on_open) {
    try {
      on_open();
    } catch (...) {
      ::close(fd_);
      throw;
    }
  }
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    SF_FAIL(cat("cannot stat data file ", quoted_with_resolution(shown, resolved), ": ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    SF_FAIL(cat("data file ", quoted_with_resolution(shown, resolved), " is ",
                S_ISDIR(st.st_mode) ? "a directory" : "not a regular file", ": expected a .npy, IDX or CSV file"),
            hint);
  }
  bytes_ = static_cast<int64_t>(st.st_size);
  mtime_ns_ = mtime_ns(st);
  if (bytes_ == 0) return;  // mmap rejects length 0; an empty file is reported by the format parser
  void* p = ::mmap(nullptr, static_cast<size_t>(bytes_), PROT_READ, MAP_PRIVATE, fd_, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    ::close(fd_);
    SF_FAIL(cat("cannot memory-map data file ", quoted_with_resolution(shown, resolved), ": ", std::strerror(err)));
  }
  data_ = static_cast<const std::byte*>(p);
  slot_ = register_mapping(data_, bytes_, shown_);
}

MappedFile::~MappedFile() {
  unregister_mapping(slot_);
  if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), static_cast<size_t>(bytes_));
  if (fd_ >= 0) ::close(fd_);
}

uint64_t MappedFile::sampled_fingerprint() const {
  constexpr int64_t kHead = int64_t{64} * 1024, kBlock = 4096, kBlocks = 64;
  uint64_t hash = mix_bytes(kByteHashStart, reinterpret_cast<const std::byte*>(&bytes_), sizeof bytes_);
  if (bytes_ <= kHead + kBlock * (kBlocks + 1)) return mix_bytes(hash, data_, bytes_);  // small: every byte
  hash = mix_bytes(hash, data_, kHead);
  const int64_t span = bytes_ - kHead - kBlock;  // block starts lie in [kHead, bytes_ - kBlock]
  for (int64_t b = 0; b < kBlocks; ++b) hash = mix_bytes(hash, data_ + kHead + span / (kBlocks - 1) * b, kBlock);
  return mix_bytes(hash, data_ + bytes_ - kBlock, kBlock);
}

std::string MappedFile::changed_on_disk() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return cat("it cannot be examined any more: ", std::strerror(errno));
  if (static_cast<int64_t>(st.st_size) != bytes_) {
    return cat("its size went from ", bytes_, " to ", static_cast<int64_t>(st.st_size), " bytes");
  }
  if (mtime_ns(st) != mtime_ns_) return "it was written to (same size, new modification time)";
  return {};
}

}  // namespace shardfit
