// SIGINT / SIGTERM / SIGUSR1 handlers that only record the signal; everything else happens at a step boundary.
#include "dist/stop_signal.h"

#include <atomic>
#include <csignal>

namespace shardfit {

namespace {
// Read by the training thread and by the watchdog's thread (design note 7 of dist/watchdog.h): a lock-free atomic
// is safe in a signal handler and, unlike volatile sig_atomic_t, between threads.
std::atomic<int> received{0};
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler may only touch lock-free atomics");

// The first signal is kept: it is the one the stop line names.
extern "C" void record_signal(int signal_number) {
  int none = 0;
  received.compare_exchange_strong(none, signal_number);
}
}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a blocking read or MPI poll continues; the flag is checked after the step
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
  // Ctrl-C stops like SIGTERM, once: the handler then reverts to the default, so a second Ctrl-C ends the process
  // at once (exit 130, without a checkpoint; the last one written stays whole) when a person will not wait.
  action.sa_flags = SA_RESTART | SA_RESETHAND;
  sigaction(SIGINT, &action, nullptr);
}

int stop_signal_received() { return received.load(); }

void clear_stop_signal() { received.store(0); }

const char* stop_signal_name(int signal_number) {
  switch (signal_number) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "a signal";
  }
}

}  // namespace shardfit
