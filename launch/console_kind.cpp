// Reads the launcher's variables and the terminal flag, before MPI is initialised (console_kind.h).
#include "launch/console_kind.h"

#include <unistd.h>

#include <cstdlib>
#include <initializer_list>

namespace shardfit {

ConsoleKind detect_console_kind() {
  ConsoleKind kind;
  // Open MPI's mpirun, any PMI / PMIx launcher (MPICH's hydra, srun --mpi=pmix) and SLURM's srun itself.
  for (const char* launcher_variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"}) {
    if (std::getenv(launcher_variable) != nullptr) kind.launched = true;
  }
  kind.stdout_is_terminal = isatty(STDOUT_FILENO) != 0;
  return kind;
}

}  // namespace shardfit
