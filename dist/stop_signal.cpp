// SIGTERM / SIGUSR1 handlers that only record the signal; everything else happens at a step boundary.
#include "dist/stop_signal.h"

#include <csignal>

namespace shardfit {

namespace {
volatile std::sig_atomic_t received = 0;

extern "C" void record_signal(int signal_number) { received = signal_number; }
}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a blocking read or MPI poll continues; the flag is checked after the step
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

int stop_signal_received() { return received; }

void clear_stop_signal() { received = 0; }

}  // namespace shardfit
