#include "dist/placement.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "kernels/error.h"

namespace shardfit {
namespace {

std::vector<int> calling_thread_cpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof mask, &mask) != 0) return cpus;  // 0: the calling thread
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &mask)) cpus.push_back(cpu);
  }
  return cpus;
}

std::vector<int> parse_cpu_list(const std::string& text) {
  std::vector<int> cpus;
  if (text == "none") return cpus;
  std::istringstream in(text);
  for (std::string range; std::getline(in, range, ',');) {
    const size_t dash = range.find('-');
    const int first = std::stoi(range.substr(0, dash));
    const int last = dash == std::string::npos ? first : std::stoi(range.substr(dash + 1));
    for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
  }
  return cpus;
}

}  // namespace

std::vector<int> RankPlacement::cpus() const {
  std::set<int> all;
  for (const auto& thread : thread_cpus) all.insert(thread.begin(), thread.end());
  return {all.begin(), all.end()};
}

std::string RankPlacement::encode() const {
  std::string text = host;
  for (const auto& thread : thread_cpus) {
    text += '|';
    text += cpu_list_text(thread);
  }
  return text;
}

RankPlacement RankPlacement::decode(const std::string& text) {
  RankPlacement placement;
  std::istringstream in(text);
  std::getline(in, placement.host, '|');
  for (std::string cpus; std::getline(in, cpus, '|');) placement.thread_cpus.push_back(parse_cpu_list(cpus));
  return placement;
}

RankPlacement this_rank_placement() {
  RankPlacement placement;
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  placement.host = host;
  placement.thread_cpus.resize(static_cast<size_t>(omp_get_max_threads()));
#pragma omp parallel num_threads(omp_get_max_threads())
  placement.thread_cpus[static_cast<size_t>(omp_get_thread_num())] = calling_thread_cpus();
  return placement;
}

std::string cpu_list_text(const std::vector<int>& cpus) {
  if (cpus.empty()) return "none";
  std::string text;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!text.empty()) text += ',';
    text += std::to_string(cpus[i]);
    if (j > i) {
      text += '-';
      text += std::to_string(cpus[j]);
    }
    i = j + 1;
  }
  return text;
}

std::vector<std::string> placement_warnings(const std::vector<RankPlacement>& ranks) {
  struct Host {
    std::vector<int> ranks;
    size_t threads = 0;
    std::set<int> cpus;
  };
  std::map<std::string, Host> hosts;
  std::vector<std::string> order;  // hosts in the order of their first rank
  for (size_t r = 0; r < ranks.size(); ++r) {
    auto [it, inserted] = hosts.try_emplace(ranks[r].host);
    if (inserted) order.push_back(ranks[r].host);
    it->second.ranks.push_back(static_cast<int>(r));
    it->second.threads += ranks[r].thread_cpus.size();
    for (const int cpu : ranks[r].cpus()) it->second.cpus.insert(cpu);
  }
  std::vector<std::string> warnings;
  for (const std::string& name : order) {
    const Host& host = hosts.at(name);
    if (host.threads <= host.cpus.size()) continue;
    const auto plural = [](size_t n, const char* word) { return cat(n, " ", word, n == 1 ? "" : "s"); };
    warnings.push_back(cat("shardfit: warning: on host ", name, ", ", host.ranks.size() == 1 ? "rank " : "ranks ",
                           cpu_list_text(host.ranks), host.ranks.size() == 1 ? " runs " : " run ",
                           plural(host.threads, "OpenMP thread"), " on ", plural(host.cpus.size(), "CPU"), " (",
                           cpu_list_text({host.cpus.begin(), host.cpus.end()}),
                           "): threads take turns and every step waits for the slowest. Give each rank cores of "
                           "its own (mpirun --map-by slot:PE=<threads> --bind-to core, srun --cpu-bind=cores), "
                           "or lower OMP_NUM_THREADS."));
  }
  return warnings;
}

void warn_about_placement(Comm& comm) {
  const std::vector<std::string> texts = comm.gather_text_to_root(this_rank_placement().encode());
  if (!comm.is_root()) return;
  std::vector<RankPlacement> ranks;
  ranks.reserve(texts.size());
  for (const std::string& text : texts) ranks.push_back(RankPlacement::decode(text));
  for (const std::string& line : placement_warnings(ranks)) std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void warn_about_dtype_policy(Comm& comm, const std::string& warning) {
  const std::vector<std::string> texts = comm.gather_text_to_root(warning);
  if (!comm.is_root()) return;
  std::map<std::string, std::vector<int>> ranks_of;  // warning -> the ranks that gave it
  std::vector<std::string> order;                    // in the order of their first rank
  for (size_t r = 0; r < texts.size(); ++r) {
    if (texts[r].empty()) continue;
    auto [it, inserted] = ranks_of.try_emplace(texts[r]);
    if (inserted) order.push_back(texts[r]);
    it->second.push_back(static_cast<int>(r));
  }
  for (const std::string& text : order) {
    const std::vector<int>& ranks = ranks_of.at(text);
    const std::string where = ranks.size() == texts.size()
                                  ? std::string()
                                  : cat("on ", ranks.size() == 1 ? "rank " : "ranks ", cpu_list_text(ranks), ", ");
    std::fprintf(stderr, "shardfit: warning: %s%s\n", where.c_str(), text.c_str());
  }
  std::fflush(stderr);
}

}  // namespace shardfit
