// Stopping on request: SIGINT (Ctrl-C), SIGTERM and SIGUSR1 all do the same. The handler sets a flag; the fit loop
// agrees on it across ranks at a step boundary (one rank receiving it is enough: each step's gradient reduction
// carries the flag, dist/train/step_control.h, so a signal after a step's forward is agreed at the next step),
// rank 0 writes a checkpoint and prints one line, and every rank exits with kExitCheckpointed, so a run started
// again with --resume continues.
// A second SIGINT ends the process at once. What reaches the ranks under mpirun and srun is in README.md
// ("Stopping a run").
#pragma once

namespace shardfit {

// Exit status of a run stopped by a signal after its checkpoint was written (EX_TEMPFAIL: "try again").
inline constexpr int kExitCheckpointed = 75;

// Installs the handlers (idempotent). The handler only stores the first signal's number.
void install_stop_signal_handlers();
// The first signal received since installation, or 0.
int stop_signal_received();
// For tests: forget a received signal.
void clear_stop_signal();
// "SIGINT", "SIGTERM", "SIGUSR1"; "a signal" for any other number.
const char* stop_signal_name(int signal_number);

}  // namespace shardfit
