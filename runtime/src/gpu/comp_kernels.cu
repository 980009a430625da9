// The GPU side of the CPU compensation hand-off (protocol: src/hetero/handoff.h and
// src/hetero/comp_server.h). Three small kernels, all capturable in the decode graph: the
// sequence number of a hand-off is computed on the device from a pass counter, so a replayed
// graph produces the right numbers every step without a host call.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels.h"
#include "launch.cuh"

namespace hci::gpu {

namespace {

constexpr int kThreads = 256;
constexpr int kChunk = kThreads * 8;  // elements per block

__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(float v) { return v; }

__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ uint32_t load_sys_acquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ uint32_t load_gpu_acquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void store_gpu_release(uint32_t* p, uint32_t v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ void store_sys_release(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// in [n, ld_in] → X [n, d_in] float32 in mapped host memory; grid (chunks of d_in, n). The last
// block to finish writes the header (point, rows) and READY = pass·P + p + 1, each block having
// fenced its own writes at system scope first, so the CPU sees x complete once it sees READY.
template <typename T>
__global__ void export_kernel(const T* __restrict__ in, int ld_in, int d_in, int n,
                              uint32_t rows_word, float* __restrict__ X, uint32_t* ready,
                              uint32_t* point_rows,
                              const uint32_t* pass, unsigned* counter, int P, int p) {
  pdl_trigger();
  pdl_wait();
  const int row = blockIdx.y;
  const int c0 = blockIdx.x * kChunk;
  const int c1 = min(d_in, c0 + kChunk);
  for (int c = c0 + threadIdx.x; c < c1; c += kThreads)
    X[int64_t(row) * d_in + c] = to_f(in[int64_t(row) * ld_in + c]);
  __threadfence_system();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned total = gridDim.x * gridDim.y;
    if (atomicAdd(counter, 1u) == total - 1) {
      *counter = 0;
      volatile uint32_t* h = point_rows;
      h[0] = uint32_t(p);
      h[1] = rows_word;
      __threadfence_system();
      store_sys_release(ready, *pass * uint32_t(P) + uint32_t(p) + 1);
    }
  }
}

// Waits for DONE >= pass·P + p + 1, then out[row, col_j + c] += y_j[row, c] for the point's
// layers (y_j read straight from mapped host memory, bypassing the caches; one element per
// thread so every PCIe read is in flight at once); grid (⌈Σ_j d_out_j / 256⌉, n). Only block
// (0, 0) polls the host word (many pollers of one host address slow every hand-off); it then
// releases the others through a device word `go`. The grid is small enough (≤ 16 rows × a few
// dozen blocks) to be co-resident, so the others' spin cannot starve block (0, 0). It records
// its spin in wait_ns[p] (GPU global timer) when `record`.
__global__ void import_kernel(float* __restrict__ out, int ld_out, int n, CompImport d,
                              const float* Y, const uint32_t* done, const uint32_t* pass, int P,
                              int p, uint32_t* wait_ns, uint32_t* go, int record, int add) {
  pdl_trigger();
  pdl_wait();
  if (threadIdx.x == 0) {
    const uint32_t seq = *pass * uint32_t(P) + uint32_t(p) + 1;
    if (blockIdx.x == 0 && blockIdx.y == 0) {
      const uint64_t t0 = global_ns();
      // unsigned difference: correct across the 32-bit wrap
      while (int32_t(load_sys_acquire(done) - seq) < 0) {
      }
      if (record) {
        const uint64_t w = global_ns() - t0;
        store_sys_release(wait_ns + p, uint32_t(w > 0xFFFFFFFFull ? 0xFFFFFFFFull : w));
      }
      if (gridDim.x * gridDim.y > 1) store_gpu_release(go, seq);
    } else {
      while (int32_t(load_gpu_acquire(go) - seq) < 0) {
      }
      __threadfence_system();  // order this block's reads of y after DONE (cumulativity)
    }
  }
  __syncthreads();
  if (!add) return;
  const int row = blockIdx.y;
  int width = 0;
  for (int j = 0; j < d.n; ++j) width += d.d_out[j];
  // one element per thread: every read of y (a PCIe round trip) is in flight at once
  const int c = blockIdx.x * kThreads + threadIdx.x;
  if (c < width) {
    int j = 0, base = 0, off = 0;
    while (c >= base + d.d_out[j]) {
      base += d.d_out[j];
      off += d.d_out[j];
      ++j;
    }
    const int cc = c - base;
    const float y = __ldcv(Y + int64_t(n) * off + int64_t(row) * d.d_out[j] + cc);
    out[int64_t(row) * ld_out + d.col[j] + cc] += y;
  }
}

__global__ void pass_end_kernel(uint32_t* pass) {
  pdl_trigger();
  pdl_wait();
  *pass += 1;
}

}  // namespace

void comp_export(DType t, const void* in, int ld_in, int d_in, int n, bool prefill,
                 const CompChannelDev& ch, int P, int p, cudaStream_t s) {
  const dim3 grid((d_in + kChunk - 1) / kChunk, n);
  // the header's rows word: 0x80000000 marks a prefill pass (hetero/comp_server.h kPrefillFlag)
  const uint32_t rows_word = uint32_t(n) | (prefill ? 0x80000000u : 0u);
  switch (t) {
    case DType::F16:
      launch_k("comp_export", export_kernel<__half>, grid, dim3(kThreads), 0, s,
               static_cast<const __half*>(in), ld_in, d_in, n, rows_word, ch.x, ch.ready, ch.point_rows,
               static_cast<const uint32_t*>(ch.pass), ch.counter, P, p);
      break;
    case DType::BF16:
      launch_k("comp_export", export_kernel<__nv_bfloat16>, grid, dim3(kThreads), 0, s,
               static_cast<const __nv_bfloat16*>(in), ld_in, d_in, n, rows_word, ch.x, ch.ready,
               ch.point_rows, static_cast<const uint32_t*>(ch.pass), ch.counter, P, p);
      break;
    default:
      launch_k("comp_export", export_kernel<float>, grid, dim3(kThreads), 0, s,
               static_cast<const float*>(in), ld_in, d_in, n, rows_word, ch.x, ch.ready, ch.point_rows,
               static_cast<const uint32_t*>(ch.pass), ch.counter, P, p);
      break;
  }
}

void comp_import(float* out, int ld_out, int n, const CompImport& d, const CompChannelDev& ch,
                 int P, int p, bool record_wait, bool add, cudaStream_t s) {
  int width = 0;
  for (int j = 0; j < d.n; ++j) width += d.d_out[j];
  const dim3 grid(add ? (width + kThreads - 1) / kThreads : 1, add ? n : 1);
  launch_k("comp_import", import_kernel, grid, dim3(kThreads), 0, s, out, ld_out, n, d,
           static_cast<const float*>(ch.y), static_cast<const uint32_t*>(ch.done),
           static_cast<const uint32_t*>(ch.pass), P, p, ch.wait_ns, ch.go, record_wait ? 1 : 0,
           add ? 1 : 0);
}

void comp_pass_end(const CompChannelDev& ch, cudaStream_t s) {
  launch_k("comp_pass_end", pass_end_kernel, dim3(1), dim3(1), 0, s, ch.pass);
}

}  // namespace hci::gpu
