# ctest's install.consumer: installs the built library into a scratch prefix, then configures,
# builds and runs csrc/tests/consumer against it with find_package(vae_ext) and nothing else
# on CMAKE_PREFIX_PATH (the package finds the Torch it was built with by itself).
#   cmake -D BUILD_DIR=... -D WORK_DIR=... -D CONSUMER_DIR=... -D GENERATOR=...
#         -D CXX_COMPILER=... -D CONFIG=... -P test_install_consumer.cmake
foreach(var BUILD_DIR WORK_DIR CONSUMER_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "test_install_consumer.cmake: -D ${var}=... is required")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

function(run_step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install.consumer: ${name} failed (${rc})")
  endif()
endfunction()

# Link the way distributions that default to --as-needed do: the package must keep the
# library, which the program calls only through the dispatcher.
if(CMAKE_HOST_SYSTEM_NAME STREQUAL "Linux")
  set(as_needed "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--as-needed")
endif()

set(prefix "${WORK_DIR}/prefix")
set(consumer_build "${WORK_DIR}/consumer")
file(REMOVE_RECURSE "${WORK_DIR}")

run_step(install "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}" --config "${CONFIG}")
run_step(configure "${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${consumer_build}" -G "${GENERATOR}"
         "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${CONFIG}"
         "-DCMAKE_PREFIX_PATH=${prefix}" ${as_needed})
run_step(build "${CMAKE_COMMAND}" --build "${consumer_build}" --config "${CONFIG}")
file(GLOB_RECURSE demo "${consumer_build}/kl_demo" "${consumer_build}/kl_demo.exe")
if(NOT demo)
  message(FATAL_ERROR "install.consumer: kl_demo was not built")
endif()
list(GET demo 0 demo)
run_step(run "${demo}")
