// Starting a whole program (usually mpirun) from a plain GTest and watching it from outside: exit status, wall time,
// stdout and stderr, with a kill timer so a hung job fails the test instead of hanging it. POSIX, header-only.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace shardfit::testing {

struct Launch {
  int exit_code = -1;  // the program's exit status, or 128 + signal
  bool timed_out = false;
  double seconds = 0.0;
  double end_ns = 0.0;  // wall clock at exit, to compare with timestamps the program prints
  std::string out;
  std::string err;
};

inline std::string env_or(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// Open MPI flags for every test launch: more ranks than cores, root in CI containers, busy-polling ranks that give
// the cores back, shared memory / TCP only (a half-configured InfiniBand cannot slow start-up), one thread per rank.
inline std::vector<std::string> open_mpi_test_flags() {
  return {"--oversubscribe",
          "--allow-run-as-root",
          "--mca",
          "mpi_yield_when_idle",
          "1",
          "--mca",
          "btl",
          "self,vader,tcp",
          "-x",
          "OMP_NUM_THREADS=1"};
}

namespace detail {

inline std::string read_and_remove(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::remove(path.c_str());
  return text.str();
}

inline std::string temp_path(const char* tag) {
  std::string path = "/tmp/shardfit_launch_" + std::string(tag) + "_XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd >= 0) close(fd);
  return path;
}

// Starts args[0] (looked up in PATH) in a process group of its own, stdin from /dev/null, stdout and stderr into
// the two files. Returns posix_spawn's error (0: started, *pid set).
inline int spawn_in_own_group(const std::vector<std::string>& args, const std::string& out_path,
                              const std::string& err_path, pid_t* pid) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_TRUNC, 0);
  posix_spawn_file_actions_addopen(&files, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_TRUNC, 0);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);
  const int error = posix_spawnp(pid, argv[0], &files, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attributes);
  return error;
}

}  // namespace detail

// Runs args[0] (looked up in PATH) with stdin from /dev/null and stdout / stderr captured through files (a pipe
// could fill up and block the program while nobody reads it). The program gets a process group of its own, so the
// kill after kill_seconds (SIGTERM, which mpirun forwards to its ranks, then SIGKILL) reaches everything it started.
inline Launch launch_process(const std::vector<std::string>& args, double kill_seconds) {
  Launch result;
  const std::string out_path = detail::temp_path("out");
  const std::string err_path = detail::temp_path("err");
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = -1;
  const int spawn_error = detail::spawn_in_own_group(args, out_path, err_path, &pid);
  if (spawn_error != 0) {
    result.err = "cannot start " + args[0] + ": " + std::strerror(spawn_error);
    std::remove(out_path.c_str());
    std::remove(err_path.c_str());
    return result;
  }

  int status = 0;
  for (;;) {
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed > kill_seconds && !result.timed_out) {
      result.timed_out = true;
      kill(-pid, SIGTERM);
      std::this_thread::sleep_for(std::chrono::seconds(2));
      kill(-pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.end_ns = static_cast<double>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = detail::read_and_remove(out_path);
  result.err = detail::read_and_remove(err_path);
  return result;
}

// Non-overlapping occurrences of part in text.
inline int count_of(const std::string& text, const std::string& part) {
  int count = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++count;
  return count;
}

// Everything a failed expectation needs to be diagnosed without rerunning.
inline std::string describe(const Launch& launch) {
  return "exit " + std::to_string(launch.exit_code) + (launch.timed_out ? " (killed: timed out)" : "") + " after " +
         std::to_string(launch.seconds) + " s\n--- stdout\n" + launch.out + "--- stderr\n" + launch.err;
}

}  // namespace shardfit::testing
