# MPI tests: one GoogleTest main shared by all of them (tests/support/mpi_test_main.cpp), every MPI test executable
# run under mpirun at 1, 2 and 4 ranks, plus tests that start an MPI probe program themselves. Definitions only:
# tests/CMakeLists.txt includes this file and lists the tests. Needs find_package(MPI), GTest and include(GoogleTest).

# Flags for every test launch. Open MPI: --oversubscribe (4 ranks on a 2-core machine), --allow-run-as-root (CI
# containers run as root), mpi_yield_when_idle so busy-polling ranks give the cores back (BASELINES.md), and the
# shared-memory/TCP transports only, so a missing InfiniBand or libfabric setup cannot slow start-up or fail a test.
if(NOT DEFINED SHARDFIT_MPIEXEC_TEST_FLAGS)
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE shardfit_mpiexec_version
                  ERROR_QUIET RESULT_VARIABLE shardfit_mpiexec_result)
  if(shardfit_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(shardfit_default_flags --oversubscribe --allow-run-as-root --mca mpi_yield_when_idle 1 --mca btl
                               self,vader,tcp)
  else()
    set(shardfit_default_flags "")
  endif()
  set(SHARDFIT_MPIEXEC_TEST_FLAGS "${shardfit_default_flags}" CACHE STRING
      "Flags given to ${MPIEXEC_EXECUTABLE} by every MPI test (a ;-list)")
endif()

set(SHARDFIT_MPI_TEST_TIMEOUT 120 CACHE STRING "CTest timeout of one MPI test run, seconds")

# The shared main: builds the Comm, runs the tests on every rank, agrees on the exit status.
if(NOT TARGET shardfit_mpi_test_main)
  add_library(shardfit_mpi_test_main STATIC ${CMAKE_CURRENT_LIST_DIR}/support/mpi_test_main.cpp)
  target_include_directories(shardfit_mpi_test_main PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(shardfit_mpi_test_main PUBLIC shardfit_dist GTest::gtest)
endif()

# shardfit_mpi_test(NAME SOURCE LIBS...): one executable with the shared MPI main, registered as the CTest tests
# NAME_np1, NAME_np2 and NAME_np4 (label "mpi"). Not gtest_discover_tests: a test case is one run of all ranks.
function(shardfit_mpi_test name source)
  add_executable(${name} ${source})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE shardfit_mpi_test_main ${ARGN})
  foreach(ranks IN ITEMS 1 2 4)
    add_test(NAME ${name}_np${ranks}
             COMMAND ${MPIEXEC_EXECUTABLE} ${SHARDFIT_MPIEXEC_TEST_FLAGS} ${MPIEXEC_NUMPROC_FLAG} ${ranks}
                     ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${name}> ${MPIEXEC_POSTFLAGS})
    # The in-process watchdog (SHARDFIT_TEST_TIMEOUT_S) fires well before CTest's timeout and names the test.
    set_tests_properties(${name}_np${ranks} PROPERTIES
                         TIMEOUT ${SHARDFIT_MPI_TEST_TIMEOUT}
                         LABELS mpi
                         PROCESSORS ${ranks}
                         ENVIRONMENT "OMP_NUM_THREADS=1;SHARDFIT_TEST_TIMEOUT_S=60;SHARDFIT_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
  endforeach()
endfunction()

# shardfit_mpi_probe_test(NAME SOURCE PROBE PROBE_SOURCE LIBS...): a plain GTest executable NAME that starts the
# MPI program PROBE (built from PROBE_SOURCE, linked with LIBS) under mpirun itself, to check what a whole job does
# from outside (exit status, time, output). NAME sees SHARDFIT_MPIEXEC and SHARDFIT_PROBE_EXECUTABLE as string
# macros; the environment variables of the same names override them.
function(shardfit_mpi_probe_test name source probe probe_source)
  add_executable(${probe} ${probe_source})
  target_include_directories(${probe} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${probe} PRIVATE ${ARGN})

  add_executable(${name} ${source})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE SHARDFIT_MPIEXEC="${MPIEXEC_EXECUTABLE}"
                                             SHARDFIT_PROBE_EXECUTABLE="$<TARGET_FILE:${probe}>")
  add_dependencies(${name} ${probe})
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60
                       PROPERTIES TIMEOUT ${SHARDFIT_MPI_TEST_TIMEOUT} LABELS mpi PROCESSORS 2
                                  ENVIRONMENT "OMP_NUM_THREADS=1")
endfunction()
