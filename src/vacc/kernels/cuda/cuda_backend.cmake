# Included from src/vacc/CMakeLists.txt (in its scope) right after the kernels layer.
# kernels/cuda: the CUDA backend (vacc_kernels_cuda), built whenever nvcc is found, so CI
# compiles and links it on every submission. VACC_CUDA=OFF builds without it; ON requires it.
# Only code that links vacc_kernels_cuda sees VACC_HAVE_CUDA; no other layer depends on CUDA.
set(VACC_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO (when nvcc is found), ON, OFF")
set_property(CACHE VACC_CUDA PROPERTY STRINGS AUTO ON OFF)
# tests/CMakeLists.txt adds a failing test when nvcc exists but the backend is not built.
find_program(VACC_NVCC nvcc HINTS /usr/local/cuda/bin)
if(NOT VACC_CUDA STREQUAL "OFF")
  if(VACC_NVCC AND NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    set(ENV{CUDACXX} ${VACC_NVCC})  # also when /usr/local/cuda/bin is not on the PATH
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND (VACC_NVCC OR VACC_CUDA STREQUAL "ON"))
    # No silent skip: a machine with nvcc must build the CUDA backend.
    message(FATAL_ERROR "The CUDA backend cannot be built: nvcc ('${VACC_NVCC}') is not usable "
                        "as CMake's CUDA compiler (see CMakeFiles/CheckCUDA). Fix the toolkit "
                        "or configure with -DVACC_CUDA=OFF.")
  endif()
endif()
if(NOT VACC_CUDA STREQUAL "OFF" AND CMAKE_CUDA_COMPILER)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "80;90")  # sm_80 A100, sm_90 H100 / H200
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  file(GLOB cuda_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/kernels/cuda/*.cu
       ${CMAKE_CURRENT_SOURCE_DIR}/kernels/cuda/*.cpp)
  add_library(vacc_kernels_cuda STATIC ${cuda_sources})
  target_link_libraries(vacc_kernels_cuda PUBLIC vacc_kernels CUDA::cudart CUDA::cublasLt)
  target_compile_definitions(vacc_kernels_cuda PUBLIC VACC_HAVE_CUDA=1)
  # CMake 3.25 knows no C++20 flag for nvcc (3.26 does); nvcc 12+ takes -std=c++20.
  if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set_target_properties(vacc_kernels_cuda PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON
                        CUDA_EXTENSIONS OFF CUDA_RUNTIME_LIBRARY Shared)
  # The project's compile options are gcc's: keep them for the .cpp files and hand them to the
  # host compiler through nvcc for the .cu files.
  get_target_property(inherited_options vacc_kernels_cuda COMPILE_OPTIONS)
  set(cxx_only_options)
  foreach(option IN LISTS inherited_options)
    list(APPEND cxx_only_options "$<$<COMPILE_LANGUAGE:CXX>:${option}>")
  endforeach()
  set_property(TARGET vacc_kernels_cuda PROPERTY COMPILE_OPTIONS ${cxx_only_options})
  target_compile_options(vacc_kernels_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter,-fno-math-errno>)
  message(STATUS "CUDA backend: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
endif()
