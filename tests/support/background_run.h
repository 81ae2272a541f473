// A job (usually mpirun) started in the background from a plain GTest, to be signalled or stopped from outside while
// it trains: its rank processes found by pid under /proc, its exit watched without blocking, and everything it
// started killed by pid when the test is done with it. POSIX and Linux /proc, header-only.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/cli_fixture.h"
#include "tests/support/launch_process.h"

namespace shardfit::testing {

struct ProcStat {
  pid_t ppid = 0;
  char state = '?';
  std::string comm;
};

// /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so it ends at the last ')'.
inline std::optional<ProcStat> proc_stat(pid_t pid) {
  const std::string text = read_bytes("/proc/" + std::to_string(pid) + "/stat");
  const size_t open = text.find('(');
  const size_t close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close + 4 > text.size()) return std::nullopt;
  ProcStat stat;
  stat.comm = text.substr(open + 1, close - open - 1);
  std::istringstream rest(text.substr(close + 2));
  rest >> stat.state >> stat.ppid;
  return stat;
}

inline bool process_gone(pid_t pid) {
  const auto stat = proc_stat(pid);
  return !stat || stat->state == 'Z' || stat->state == 'X';
}

// OMPI_COMM_WORLD_RANK of a process Open MPI started, or -1.
inline int rank_of(pid_t pid) {
  std::string environment = read_bytes("/proc/" + std::to_string(pid) + "/environ");
  std::replace(environment.begin(), environment.end(), '\0', '\n');
  static const std::regex rank_variable("(^|\n)OMPI_COMM_WORLD_RANK=(\\d+)");
  std::smatch match;
  return std::regex_search(environment, match, rank_variable) ? std::stoi(match[2]) : -1;
}

// Like launch_process, the job runs in a process group of its own, but Open MPI 4.1 starts every rank in a process
// group of the rank's own, so reaching the ranks takes their pids: mpirun's descendants named shardfit.
class BackgroundRun {
 public:
  using Clock = std::chrono::steady_clock;

  BackgroundRun(const std::vector<std::string>& args, double kill_seconds)
      : kill_seconds_(kill_seconds),
        out_path_(detail::temp_path("background_out")),
        err_path_(detail::temp_path("background_err")) {
    start_ = Clock::now();
    const int error = detail::spawn_in_own_group(args, out_path_, err_path_, &pid_);
    if (error != 0) {
      ADD_FAILURE() << "cannot start " << args[0] << ": " << std::strerror(error);
      done_ = true;
    }
  }
  BackgroundRun(const BackgroundRun&) = delete;
  BackgroundRun& operator=(const BackgroundRun&) = delete;
  ~BackgroundRun() {
    if (!done_) kill_everything();
    std::remove(out_path_.c_str());
    std::remove(err_path_.c_str());
  }

  bool exited() {
    if (done_) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      done_ = true;
      result_.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      finish_output();
    }
    return done_;
  }

  // rank -> pid of the shardfit processes running now.
  std::map<int, pid_t> ranks() const {
    std::map<pid_t, std::vector<pid_t>> children;
    std::map<pid_t, std::string> names;
    DIR* proc = opendir("/proc");
    if (proc == nullptr) return {};
    while (const dirent* entry = readdir(proc)) {
      char* end = nullptr;
      const long pid = std::strtol(entry->d_name, &end, 10);
      if (*end != '\0' || pid <= 0) continue;
      if (const auto stat = proc_stat(static_cast<pid_t>(pid)); stat && !process_gone(static_cast<pid_t>(pid))) {
        children[stat->ppid].push_back(static_cast<pid_t>(pid));
        names[static_cast<pid_t>(pid)] = stat->comm;
      }
    }
    closedir(proc);
    std::map<int, pid_t> found;
    std::vector<pid_t> todo = {pid_};
    while (!todo.empty()) {
      const pid_t parent = todo.back();
      todo.pop_back();
      for (const pid_t child : children[parent]) {
        if (names[child] == "shardfit") found[rank_of(child)] = child;
        todo.push_back(child);
      }
    }
    return found;
  }

  void signal_mpirun(int signal_number) const { kill(pid_, signal_number); }
  // What a terminal does on Ctrl-C: the signal to every process of the foreground process group (the one started
  // here and the processes it started in that group; Open MPI's ranks are in groups of their own).
  void signal_group(int signal_number) const { kill(-pid_, signal_number); }

  // Every process of the job gone at once: the ranks by pid (SIGCONT first would not matter: SIGKILL ends a stopped
  // process too), then mpirun's group. Returns only when they are all gone.
  void kill_everything() {
    const std::map<int, pid_t> rank_pids = ranks();
    for (const auto& [rank, pid] : rank_pids) kill(pid, SIGKILL);
    if (!done_) kill(-pid_, SIGKILL);
    while (!exited()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (const auto& [rank, pid] : rank_pids) {
      const auto killed = Clock::now();
      while (!process_gone(pid)) {
        if (Clock::now() - killed > std::chrono::seconds(10)) {
          ADD_FAILURE() << "rank " << rank << " (pid " << pid << ") outlived SIGKILL by 10 s";
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      waitpid(pid, nullptr, WNOHANG);  // ours to reap when we are the subreaper it was handed to
    }
  }

  // What the run did, once it has ended (after exited() returned true, or kill_everything).
  const Launch& result() const { return result_; }

  // Waits for the run to end by itself (killing everything after kill_seconds) and returns what it did.
  Launch wait() {
    while (!exited()) {
      if (seconds() > kill_seconds_) {
        result_.timed_out = true;
        kill_everything();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return result_;  // its output was read when its exit was seen
  }

  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  pid_t pid() const { return pid_; }

 private:
  void finish_output() {
    result_.seconds = seconds();
    result_.out = read_bytes(out_path_);
    result_.err = read_bytes(err_path_);
  }

  double kill_seconds_;
  std::string out_path_;
  std::string err_path_;
  pid_t pid_ = -1;
  bool done_ = false;
  Clock::time_point start_;
  Launch result_;
};

}  // namespace shardfit::testing
