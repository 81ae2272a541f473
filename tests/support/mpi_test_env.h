// The MPI test environment: the one Comm of an MPI test process, built by tests/support/mpi_test_main.cpp before
// any test runs. Not a fixture: tests call world() directly.
#pragma once

#include "dist/comm.h"

namespace shardfit::testing {

// The process's communicator (a duplicate of MPI_COMM_WORLD); valid for the whole test run.
Comm& world();

}  // namespace shardfit::testing
