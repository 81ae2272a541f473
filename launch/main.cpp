// The shardfit executable: parses the command line, reads the job, runs fit on every rank. All failures go
// through run_ranks: printed once, naming the rank, and every rank exits non-zero.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "dist/fit.h"
#include "kernels/job_file.h"
#include "launch/cli.h"

namespace {

// A progress bar only for a person watching one process: mpirun and srun hand ranks a pseudo-terminal even when
// their own output goes to a log, so under a launcher the default is one line per epoch (--verbose 1 still asks
// for the bar).
bool stdout_is_terminal() {
  for (const char* launcher_variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"}) {
    if (std::getenv(launcher_variable) != nullptr) return false;
  }
  return isatty(STDOUT_FILENO) != 0;
}

}  // namespace

int main(int argc, char** argv) {
  return shardfit::run_ranks(argc, argv, [&](shardfit::Comm& comm) {
    shardfit::Command command;
    shardfit::proto::Job job;
    std::exception_ptr error;
    try {
      command = shardfit::parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
      if (command.name == "fit") {
        job = shardfit::read_job_file(command.job_path);
        shardfit::apply_overrides(command.overrides, job);
      }
    } catch (...) {
      error = std::current_exception();
    }
    comm.agree(error);
    if (command.name == "help" || command.name == "version") {
      if (comm.is_root()) std::fputs(command.name == "help" ? shardfit::usage().c_str() : "shardfit 0.1.0\n", stdout);
      return 0;
    }
    shardfit::FitConfig config;
    error = nullptr;
    try {
      config = shardfit::resolve_fit_config(job, stdout_is_terminal());
    } catch (...) {
      error = std::current_exception();
    }
    comm.agree(error);
    const auto job_dir = std::filesystem::absolute(command.job_path).parent_path();
    shardfit::fit(comm, job, job_dir, config);
    return 0;
  });
}
