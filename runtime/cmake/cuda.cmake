# Optional CUDA backend (issue #4). Included once at the very end of runtime/CMakeLists.txt:
#
#   include(cmake/cuda.cmake)
#
# When nvcc is found (CMake's check_language(CUDA); -DHCI_WITH_CUDA=OFF skips it) the GPU sources
# are built into the static library hcinfer_gpu (sm_80 and sm_90 unless CMAKE_CUDA_ARCHITECTURES
# says otherwise) and linked into libhcinfer with the real entry points of
# include/hcinfer_gpu.h; cuBLAS is used for prefill GEMMs when found (toolkit, or the pip wheel of a
# Python environment), otherwise the library's own tensor-core GEMM. Without nvcc libhcinfer gets
# src/gpu/gpu_stub.cpp: the same symbols, returning HCI_ERR_UNSUPPORTED "built without CUDA".
# GPU tests exit with code 77 (reported by ctest as skipped) when no GPU is usable.
include(CheckLanguage)
option(HCI_WITH_CUDA "Build the CUDA backend when nvcc is found" ON)
option(HCI_KERNEL_STAMPS "Kernel timeline stamps in the batch-1 decode kernels (diagnostics)" OFF)
set(HCI_GPU_ENABLED OFF)
if(HCI_WITH_CUDA)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(HCI_GPU_ENABLED ON)
  endif()
endif()

if(HCI_GPU_ENABLED)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)

  set(HCI_CUBLAS_LIBS "")
  set(HCI_CUBLAS_INCLUDES "")
  if(TARGET CUDA::cublas)
    set(HCI_CUBLAS_LIBS CUDA::cublas)
  else()
    file(GLOB HCI_PIP_NVIDIA_DIRS
         /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu1*
         /opt/torch/.venv/lib/python3*/site-packages/nvidia/cublas
         /usr/local/lib/python3*/dist-packages/nvidia/cu1*
         /usr/local/lib/python3*/dist-packages/nvidia/cublas)
    find_path(HCI_CUBLAS_INCLUDE cublas_v2.h HINTS ${HCI_PIP_NVIDIA_DIRS} PATH_SUFFIXES include)
    find_library(HCI_CUBLAS_LIB NAMES cublas libcublas.so.13 libcublas.so.12
                 HINTS ${HCI_PIP_NVIDIA_DIRS} PATH_SUFFIXES lib lib64)
    find_library(HCI_CUBLASLT_LIB NAMES cublasLt libcublasLt.so.13 libcublasLt.so.12
                 HINTS ${HCI_PIP_NVIDIA_DIRS} PATH_SUFFIXES lib lib64)
    if(HCI_CUBLAS_INCLUDE AND HCI_CUBLAS_LIB AND HCI_CUBLASLT_LIB)
      set(HCI_CUBLAS_LIBS ${HCI_CUBLAS_LIB} ${HCI_CUBLASLT_LIB})
      set(HCI_CUBLAS_INCLUDES ${HCI_CUBLAS_INCLUDE})
    endif()
  endif()

  add_library(hcinfer_gpu STATIC
    src/gpu/allocator.cpp
    src/gpu/pack.cpp
    src/gpu/device.cpp
    src/gpu/engine.cpp
    src/gpu/engine_hetero.cpp
    src/gpu/kernel_timeline.cpp
    src/gpu/sm_partition.cpp
    src/gpu/gemv.cu
    src/gpu/gemm.cu
    src/gpu/kernels.cu
    src/gpu/decode_attention.cu
    src/gpu/comp_kernels.cu
    src/gpu/lowrank.cu
  )
  string(REPLACE ";" " " HCI_ARCH_LIST "${CMAKE_CUDA_ARCHITECTURES}")
  target_include_directories(hcinfer_gpu PUBLIC include src src/gpu ${HCI_CUBLAS_INCLUDES})
  target_link_libraries(hcinfer_gpu PUBLIC hcinfer_core CUDA::cudart_static ${HCI_CUBLAS_LIBS})
  target_compile_definitions(hcinfer_gpu PRIVATE HCI_CUDA_ARCHS="sm ${HCI_ARCH_LIST}")
  if(HCI_KERNEL_STAMPS)
    target_compile_definitions(hcinfer_gpu PRIVATE HCI_KERNEL_STAMPS=1)
  endif()
  target_compile_options(hcinfer_gpu PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-warn-spills>)
  if(HCI_CUBLAS_LIBS)
    target_compile_definitions(hcinfer_gpu PUBLIC HCI_HAVE_CUBLAS)
    message(STATUS "hcinfer: CUDA backend with cuBLAS (${HCI_CUBLAS_LIBS}), archs ${HCI_ARCH_LIST}")
  else()
    message(STATUS "hcinfer: CUDA backend without cuBLAS (own GEMM), archs ${HCI_ARCH_LIST}")
  endif()
  set_target_properties(hcinfer_gpu PROPERTIES POSITION_INDEPENDENT_CODE ON
    CXX_VISIBILITY_PRESET hidden CUDA_VISIBILITY_PRESET hidden)
  target_sources(hcinfer PRIVATE src/gpu/gpu_api.cpp)
  target_link_libraries(hcinfer PRIVATE hcinfer_gpu)
else()
  message(STATUS "hcinfer: no CUDA compiler found; GPU entry points report 'built without CUDA'")
  target_sources(hcinfer PRIVATE src/gpu/gpu_stub.cpp)
  target_include_directories(hcinfer PRIVATE src/gpu)
endif()

if(BUILD_TESTING)
  # Through the public C ABI (both builds): skips (exit 77) without a usable GPU.
  add_executable(test_gpu_model tests/test_gpu_model.cpp)
  target_include_directories(test_gpu_model PRIVATE include)
  target_link_libraries(test_gpu_model PRIVATE hcinfer)
  target_compile_definitions(test_gpu_model PRIVATE
    HCI_TINY_MODEL="${CMAKE_CURRENT_SOURCE_DIR}/../models/tiny")
  add_test(NAME gpu_model COMMAND test_gpu_model)
  set_tests_properties(gpu_model PROPERTIES SKIP_RETURN_CODE 77)
  if(HCI_GPU_ENABLED)
    # Kernels against CPU references on random data (internal API).
    add_executable(test_gpu_kernels tests/test_gpu_kernels.cpp)
    target_link_libraries(test_gpu_kernels PRIVATE hcinfer_gpu)
    add_test(NAME gpu_kernels COMMAND test_gpu_kernels)
    set_tests_properties(gpu_kernels PROPERTIES SKIP_RETURN_CODE 77)
    # The kernel timeline report (host code; runs without a GPU).
    add_executable(test_kernel_timeline tests/test_kernel_timeline.cpp)
    target_link_libraries(test_kernel_timeline PRIVATE hcinfer_gpu)
    add_test(NAME kernel_timeline COMMAND test_kernel_timeline)
  endif()
endif()

if(HCI_GPU_ENABLED)
  # Decode benchmark and profiler target (see the comment at the top of the source).
  add_executable(decode_bench tools/decode_bench.cpp)
  target_include_directories(decode_bench PRIVATE include)
  target_link_libraries(decode_bench PRIVATE hcinfer ${CMAKE_DL_LIBS})
endif()
