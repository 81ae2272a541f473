// What the end-to-end tests of the shardfit executable share (test_cli, test_inference, test_resume): where the
// binary, mpirun and the source tree are, the `mpirun ... shardfit ...` command line, small file helpers, and a
// fixture giving each test a fresh folder. They run from outside MPI; see launch_process.h. Header-only.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dist/io/npy_writer.h"
#include "tests/support/launch_process.h"
#include "tests/support/temp_dir.h"

// Set by shardfit_cli_test (tests/CMakeLists.txt); the environment variables of the same names override them.
#ifndef SHARDFIT_MPIEXEC
#define SHARDFIT_MPIEXEC "mpirun"
#endif
#ifndef SHARDFIT_BIN
#define SHARDFIT_BIN "shardfit"
#endif
#ifndef SHARDFIT_SOURCE_DIR
#define SHARDFIT_SOURCE_DIR "."
#endif

namespace shardfit::testing {

inline std::string shardfit_bin() { return env_or("SHARDFIT_BIN", SHARDFIT_BIN); }
inline std::filesystem::path source_dir() { return env_or("SHARDFIT_SOURCE_DIR", SHARDFIT_SOURCE_DIR); }
inline std::filesystem::path digits_dir() { return source_dir() / "examples" / "digits"; }

// --- files ---------------------------------------------------------------------------------------------------------

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

// A path as a pbtxt string literal (quoted, escaped): a path streams as a quoted string.
inline std::string quoted(const std::filesystem::path& path) {
  std::ostringstream text;
  text << path;
  return text.str();
}

// text with the first `from` replaced by `to`; a failure of the calling test when `from` is not there.
inline std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  if (at == std::string::npos) {
    ADD_FAILURE() << "'" << from << "' not in the job text";
    return text;
  }
  return text.replace(at, from.size(), to);
}

// The small synthetic data set of the failure tests: `rows` samples of kSmallFeatures features (x.npy, values
// (i % 17) / 16 + offset) and class ids 0..9 (y.npy), written to dir.
inline constexpr int64_t kSmallFeatures = 64;

inline void write_small_data(const std::filesystem::path& dir, int64_t rows = 24, float offset = 0.0F) {
  std::vector<float> x(static_cast<size_t>(rows * kSmallFeatures));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) / 16.0F + offset;
  std::vector<int64_t> y(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) y[static_cast<size_t>(i)] = i % 10;
  shardfit::write_npy(dir / "x.npy", x, {rows, kSmallFeatures});
  shardfit::write_npy(dir / "y.npy", y, {rows});
}

// Makes `folder` a folder no process can write, root included (root ignores permission bits): chattr +i for root
// (then recorded in `immutable`, for release_read_only_folder), chmod for others. Returns the folder, or an empty
// path when this file system cannot make one.
inline std::filesystem::path make_read_only_folder(const std::filesystem::path& folder,
                                                   std::filesystem::path& immutable) {
  std::filesystem::create_directories(folder);
  if (::geteuid() != 0) {
    std::filesystem::permissions(folder, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    return folder;
  }
  if (std::system(("chattr +i " + quoted(folder) + " 2>/dev/null").c_str()) != 0) return {};
  immutable = folder;
  return folder;
}

// Undoes make_read_only_folder's chattr +i (nothing when `immutable` is empty), so the folder can be removed.
inline void release_read_only_folder(const std::filesystem::path& immutable) {
  if (!immutable.empty()) std::system(("chattr -i " + quoted(immutable) + " 2>/dev/null").c_str());
}

// A fresh folder /tmp/shardfit_<tag>_XXXXXX; empty when it could not be made.

// --- mpirun --------------------------------------------------------------------------------------------------------

// One application context of an mpirun command line: `-np count --wdir wdir shardfit args...`.
struct Ranks {
  int count;
  std::filesystem::path wdir;
  std::vector<std::string> args;  // shardfit's arguments
};

// How the ranks are watched.
//  1. kPlain: mpirun as a user runs it; its exit status is the result. Open MPI kills the rest of a job as soon as
//     one rank exits non-zero, so this cannot tell a rank that ended by itself from one that hung and was killed.
//  2. kEachRankReports: every rank is wrapped in a shell that prints "[rank R exit S]" to stderr, and Open MPI is
//     told not to kill the peers of a failed rank (orte_abort_on_non_zero_status 0; mpirun then exits 0 whatever the
//     ranks did). Every rank must end by itself: a rank left waiting shows up as a timeout, not as a quick kill.
enum class Watch { kPlain, kEachRankReports };

inline constexpr const char* kReportingShell =
    R"("$0" "$@"; status=$?; echo "[rank $OMPI_COMM_WORLD_RANK exit $status]" >&2; exit $status)";

// `mpirun <test flags> -np P --wdir D shardfit args... [: -np ...]`, one application context per element.
inline std::vector<std::string> mpirun_command(const std::vector<Ranks>& contexts, Watch watch) {
  std::vector<std::string> args = {env_or("SHARDFIT_MPIEXEC", SHARDFIT_MPIEXEC)};
  const std::vector<std::string> flags = open_mpi_test_flags();
  args.insert(args.end(), flags.begin(), flags.end());
  if (watch == Watch::kEachRankReports) args.insert(args.end(), {"--mca", "orte_abort_on_non_zero_status", "0"});
  for (size_t i = 0; i < contexts.size(); ++i) {
    if (i > 0) args.push_back(":");
    args.insert(args.end(), {"-np", std::to_string(contexts[i].count), "--wdir", contexts[i].wdir.string()});
    if (watch == Watch::kEachRankReports) args.insert(args.end(), {"/bin/sh", "-c", kReportingShell});
    args.push_back(shardfit_bin());
    args.insert(args.end(), contexts[i].args.begin(), contexts[i].args.end());
  }
  return args;
}

// `shardfit args...` on `ranks` ranks, all working in wdir.
inline std::vector<std::string> mpirun_command(int ranks, const std::filesystem::path& wdir,
                                               const std::vector<std::string>& args, Watch watch = Watch::kPlain) {
  return mpirun_command(std::vector<Ranks>{{ranks, wdir, args}}, watch);
}

// The command above, started and waited for at most kill_seconds (then killed: a hang shows up as a timeout).
inline Launch run_mpirun(const std::vector<Ranks>& contexts, Watch watch, double kill_seconds) {
  return launch_process(mpirun_command(contexts, watch), kill_seconds);
}

inline Launch run_mpirun(int ranks, const std::filesystem::path& wdir, const std::vector<std::string>& args,
                         Watch watch, double kill_seconds) {
  return launch_process(mpirun_command(ranks, wdir, args, watch), kill_seconds);
}

// rank -> exit status, from the "[rank R exit S]" lines of Watch::kEachRankReports.
inline std::map<int, int> rank_statuses(const std::string& err) {
  static const std::regex line(R"(\[rank (\d+) exit (\d+)\])");
  std::map<int, int> statuses;
  for (auto it = std::sregex_iterator(err.begin(), err.end(), line); it != std::sregex_iterator(); ++it) {
    statuses[std::stoi((*it)[1])] = std::stoi((*it)[2]);
  }
  return statuses;
}

// The first "error on rank" line of stderr and the hint below it (empty when there is none).
inline std::string error_message(const Launch& launch) {
  const size_t at = launch.err.find("error on rank");
  if (at == std::string::npos) return {};
  const size_t end = launch.err.find("\n[rank ", at);  // the reporting shells' lines follow the message
  return launch.err.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// The failure contract (ARCHITECTURE.md) for a launch watched with Watch::kEachRankReports: not killed by the
// watchdog, over within limit_seconds, every one of `ranks` ranks reporting an exit status other than 0 (exactly
// exit_status when that is not kAnyFailure), and the error printed once. Returns the message for the case's own
// checks.
inline constexpr int kAnyFailure = -1;
inline constexpr double kFailureLimitSeconds = 30.0;  // a failing job must be over well before this

inline std::string expect_failure_on_every_rank(const Launch& launch, int ranks,
                                                double limit_seconds = kFailureLimitSeconds,
                                                int exit_status = kAnyFailure) {
  EXPECT_FALSE(launch.timed_out) << describe(launch);
  EXPECT_LT(launch.seconds, limit_seconds) << describe(launch);
  const std::map<int, int> statuses = rank_statuses(launch.err);
  EXPECT_EQ(static_cast<int>(statuses.size()), ranks) << "every rank reports its exit status\n" << describe(launch);
  for (const auto& [rank, status] : statuses) {
    if (exit_status == kAnyFailure) {
      EXPECT_NE(status, 0) << "rank " << rank << "\n" << describe(launch);
    } else {
      EXPECT_EQ(status, exit_status) << "rank " << rank << "\n" << describe(launch);
    }
  }
  EXPECT_EQ(count_of(launch.out + launch.err, "error on rank"), 1) << describe(launch);
  return error_message(launch);
}

// --- the fixture ---------------------------------------------------------------------------------------------------

// Each test works in a fresh folder dir_ (/tmp/shardfit_<tag>_XXXXXX), also every rank's working directory when
// the test says so; removed after the test, kept and named on stdout when the test failed.
class FreshDirTest : public ::testing::Test {
 protected:
  explicit FreshDirTest(std::string tag) : tag_(std::move(tag)) {}

  void SetUp() override {
    dir_ = make_temp_dir(tag_);
    ASSERT_FALSE(dir_.empty()) << "cannot make a folder for " << tag_;
  }
  void TearDown() override {
    if (HasFailure()) {
      std::printf("[%s] files kept in %s\n", tag_.c_str(), dir_.c_str());
    } else {
      std::filesystem::remove_all(dir_);
    }
  }

  std::filesystem::path dir_;

 private:
  std::string tag_;
};

}  // namespace shardfit::testing
