// The command line of the shardfit executable: `shardfit fit JOB.pbtxt [flags]`. Parsing only, no arithmetic:
// flags become fields of the job message, which the job file's values yield to.
#pragma once

#include <string>
#include <vector>

#include "proto/shardfit.pb.h"

namespace shardfit {

struct Command {
  std::string name;      // "fit", "help", "version"
  std::string job_path;  // for fit
  proto::Job overrides;  // the fields the flags set (merged over the job file)
};

// Throws Error with a usage message for unknown commands / flags and bad values.
Command parse_command_line(const std::vector<std::string>& args);

// Merges the flags' fields into the job (flags win).
void apply_overrides(const proto::Job& overrides, proto::Job& job);

std::string usage();

}  // namespace shardfit
