// Stopping on request: SIGTERM and SIGUSR1 (what SLURM sends before a time limit with --signal, and what mpirun
// forwards) set a flag; the fit loop agrees on it across ranks at the next step boundary, writes a checkpoint and
// exits with kExitCheckpointed so a requeued job resumes with --resume.
#pragma once

namespace shardfit {

// Exit status of a run stopped by a signal after its checkpoint was written (EX_TEMPFAIL: "try again").
inline constexpr int kExitCheckpointed = 75;

// Installs the handlers (idempotent). The handler only stores the signal number.
void install_stop_signal_handlers();
// The signal received since installation, or 0.
int stop_signal_received();
// For tests: forget a received signal.
void clear_stop_signal();

}  // namespace shardfit
