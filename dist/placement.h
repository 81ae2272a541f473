// Where the ranks' OpenMP threads may run, and a warning when the threads of one host outnumber the CPUs they may
// use: ranks then take turns on shared cores and every step waits for the slowest (a common launch mistake, e.g.
// OMP_PROC_BIND set while mpirun or srun does not bind, which pins every rank's first thread to the first core).
#pragma once

#include <string>
#include <vector>

#include "dist/comm.h"

namespace shardfit {

// One rank's placement: its host and, per OpenMP thread, the CPUs that thread's affinity mask allows.
struct RankPlacement {
  std::string host;
  std::vector<std::vector<int>> thread_cpus;

  std::vector<int> cpus() const;  // the union over threads, sorted
  std::string encode() const;     // "host|0-3|0-3", for gathering
  static RankPlacement decode(const std::string& text);
};

// This process: gethostname and, inside one OpenMP parallel region, each thread's sched_getaffinity.
RankPlacement this_rank_placement();

// "0-3,8,10-11" (an empty list gives "none").
std::string cpu_list_text(const std::vector<int>& cpus);

// The rule, per host: T = the OpenMP threads of all its ranks, C = the CPUs any of them may run on. T > C gives one
// warning line for that host, naming its ranks, T, C and the CPUs; otherwise nothing. Ranks in rank order.
std::vector<std::string> placement_warnings(const std::vector<RankPlacement>& ranks);

// Collective: gathers every rank's placement to rank 0, which prints placement_warnings to stderr.
void warn_about_placement(Comm& comm);

// Collective, once at start (before the first epoch, at any verbosity): gathers each rank's dtype policy warning
// (Model::dtype_policy_warning, "" when the CPU runs the policy asked for) to rank 0, which prints each distinct
// one to stderr once, naming the ranks it holds for unless it holds for all. Ranks on CPUs of different kinds can
// disagree: each runs what its CPU can, and the line says which ranks fell back.
void warn_about_dtype_policy(Comm& comm, const std::string& warning);

}  // namespace shardfit
