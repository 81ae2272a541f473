// Who reads rank 0's console: a person at a terminal or a log. Decided before MPI starts, because MPI_Init
// changes what the process can see about itself. Not the console's formatting (dist/train/progress.h).
#pragma once

namespace shardfit {

struct ConsoleKind {
  bool stdout_is_terminal = false;  // isatty(stdout): carriage-return redraws would land on a screen
  bool launched = false;            // started by mpirun / srun (or another PMI launcher), not by hand
  // The default console: Keras's live bar for a person running one process by hand; one line per epoch otherwise.
  // mpirun and srun hand ranks a pseudo-terminal even when their own output goes to a log, so under a launcher the
  // bar is only drawn when asked for (--verbose 1).
  bool person_watching() const { return stdout_is_terminal && !launched; }
};

// Must run before MPI_Init: a singleton MPI_Init (shardfit run without mpirun) sets OMPI_COMM_WORLD_SIZE and
// PMIX_RANK in this very process, which would make a person at a terminal look like a launched rank.
ConsoleKind detect_console_kind();

}  // namespace shardfit
