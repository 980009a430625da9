// The GPU side of the CPU compensation hand-off (protocol: src/hetero/handoff.h and
// src/hetero/comp_server.h): export, import, the fused decode imports and the pass counter, all
// capturable in the decode graph: the sequence number of a hand-off is computed on the device from
// a pass counter, so a replayed graph produces the right numbers every step without a host call.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "device_util.cuh"
#include "kernels.h"
#include "launch.cuh"

namespace hci::gpu {

namespace {

constexpr int kThreads = 256;
constexpr int kChunk = kThreads * 8;  // elements per block (export)

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

// HCINFER_HANDOFF_TRACE: point p's stamp k, from thread 0 of block (0, 0) (or any thread where
// `any`).
__device__ __forceinline__ void trace(const CompChannelDev& ch, int p, int k, bool any = false) {
  if (ch.trace && (any || (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)))
    ch.trace[p * kTraceSlots + k] = global_ns();
}

// ... and block (0, 0)'s view of the wait: when DONE was seen, when the product ended, the kind.
__device__ __forceinline__ void trace_wait(const CompChannelDev& ch, int p, uint64_t t_done,
                                           uint64_t t_prod, int kind) {
  if (!ch.trace || threadIdx.x != 0 || blockIdx.x != 0 || blockIdx.y != 0) return;
  ch.trace[p * kTraceSlots + kTraceDone] = t_done;
  ch.trace[p * kTraceSlots + kTraceProd] = t_prod;
  ch.trace[p * kTraceSlots + kTraceKind] = kind;
}

// Writes the header of point `next` and READY (after a system fence over the caller's writes of X).
__device__ __forceinline__ void publish_header(const CompChannelDev& ch, int P, int next,
                                               uint32_t rows_word) {
  volatile uint32_t* h = ch.point_rows;
  h[0] = uint32_t(next);
  h[1] = rows_word;
  __threadfence_system();
  store_sys_release(ch.ready, *ch.pass * uint32_t(P) + uint32_t(next) + 1);
}

// True in the last block of the grid to get here, after every block has fenced its writes (of X
// in host memory among them) at system scope; that block resets the counter.
__device__ __forceinline__ bool last_block(unsigned* counter) {
  __shared__ int last;
  __threadfence_system();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(counter, 1u) == gridDim.x * gridDim.y - 1;
    if (last) *counter = 0;
  }
  __syncthreads();
  if (last) __threadfence();
  return last;
}

// in [n, ld_in] → X [n, d_in] float32 in mapped host memory; grid (chunks of d_in, n). The last
// block to finish writes the header (point, rows) and READY = pass·P + p + 1, each block having
// fenced its own writes at system scope first, so the CPU sees x complete once it sees READY.
template <typename T>
__global__ void export_kernel(const T* __restrict__ in, int ld_in, int d_in, int n,
                              uint32_t rows_word, CompChannelDev ch, int P, int p) {
  pdl_trigger();
  pdl_wait();
  const int row = blockIdx.y;
  const int c0 = blockIdx.x * kChunk;
  const int c1 = min(d_in, c0 + kChunk);
  for (int c = c0 + threadIdx.x; c < c1; c += kThreads)
    ch.x[int64_t(row) * d_in + c] = to_float(in[int64_t(row) * ld_in + c]);
  if (last_block(ch.counter) && threadIdx.x == 0) publish_header(ch, P, p, rows_word);
}

// ---- import: wait for the CPU's correction and add it -------------------------------------------
//
// Every kernel triggers its dependents at its start (launch.cuh), so an import kernel is resident
// while the backbone product before it still runs. It uses that time: block (0, 0) polls the host
// DONE word and releases the other blocks through the device word `go` (many pollers of one host
// address slow every hand-off), and every thread reads its y values from mapped host memory
// (PCIe round trips) *before* griddepcontrol.wait; only the add into the product's output waits
// for the product. Reading `pass` before the wait is safe: it changes only at the end of a pass,
// and the next pass starts behind a full dependency (a graph launch or a cuBLAS kernel).
//
// GPU wait: warp 1 of block (0, 0) waits for the product alone and stamps the time; the wait is
// how much later DONE was seen (0 when the correction was there first). With `record`, stored in
// wait_ns[p]; the rank controller works from it.

// Block-level: returns after DONE >= seq is visible to this block's threads. t_done: the time
// block (0, 0) saw DONE (other blocks: unset). t_prod: the time the product finished (block
// (0, 0) with `record`, else unset).
__device__ __forceinline__ void await_correction(const CompChannelDev& ch, uint32_t seq,
                                                 bool record, uint64_t* t_done,
                                                 uint64_t* t_prod) {
  const bool poller = blockIdx.x == 0 && blockIdx.y == 0;
  if (threadIdx.x == 0) {
    if (poller) {
      // unsigned difference: correct across the 32-bit wrap
      while (int32_t(load_sys_acquire(ch.done) - seq) < 0) {
      }
      *t_done = global_ns();
      if (gridDim.x * gridDim.y > 1) store_gpu_release(ch.go, seq);
    } else {
      while (int32_t(load_gpu_acquire(ch.go) - seq) < 0) {
      }
      __threadfence_system();  // order this block's reads of y after DONE (cumulativity)
    }
  } else if (threadIdx.x == 32 && poller && record) {
    pdl_wait();
    *t_prod = global_ns();
  }
  __syncthreads();
}

__device__ __forceinline__ void store_wait(const CompChannelDev& ch, int p, uint64_t t_done,
                                           uint64_t t_prod) {
  const uint64_t w = t_done > t_prod ? t_done - t_prod : 0;
  store_sys_release(ch.wait_ns + p, uint32_t(w > 0xFFFFFFFFull ? 0xFFFFFFFFull : w));
}

// y of output column c of `row` (0 where no layer of the point covers c). Y = y_0 | y_1 | ...,
// y_j [n, d_out_j].
__device__ __forceinline__ float y_at(const CompImport& d, const float* Y, int n, int row, int c) {
  int off = 0;
  for (int j = 0; j < d.n; ++j) {
    if (c >= d.col[j] && c < d.col[j] + d.d_out[j])
      return __ldcv(Y + int64_t(n) * off + int64_t(row) * d.d_out[j] + (c - d.col[j]));
    off += d.d_out[j];
  }
  return 0.f;
}

// Import blocks are small (128 threads, ≤ 64 registers) so that they fit beside the resident
// blocks of the backbone GEMV and start their polling and prefetch while it runs.
constexpr int kImportThreads = 128;

// out[row, col_j + c] += y_j[row, c] (with `add`; without it the kernel only waits: cpu-sync's
// wait before the product); grid (⌈Σ_j d_out_j / 128⌉, n), one element per thread so every read
// of y is in flight at once. The grid is small (≤ 16 rows × ~100 blocks) and co-resident.
__global__ void __launch_bounds__(kImportThreads, 8)
    import_kernel(float* __restrict__ out, int ld_out, int n, CompImport d, CompChannelDev ch,
                  int P, int p, int record, int add) {
  __shared__ uint64_t t_done, t_prod;
  pdl_trigger();
  trace(ch, p, kTraceEntry);
  const uint32_t seq = *ch.pass * uint32_t(P) + uint32_t(p) + 1;
  await_correction(ch, seq, record, &t_done, &t_prod);
  const int row = blockIdx.y;
  int width = 0;
  for (int j = 0; j < d.n; ++j) width += d.d_out[j];
  const int c = blockIdx.x * kImportThreads + threadIdx.x;
  float y = 0.f;
  int col = -1;
  if (add && c < width) {  // concatenated index c → layer j, column cc
    int j = 0, base = 0;
    while (c >= base + d.d_out[j]) base += d.d_out[j++];
    const int cc = c - base;
    y = __ldcv(ch.y + int64_t(n) * base + int64_t(row) * d.d_out[j] + cc);
    col = d.col[j] + cc;
  }
  pdl_wait();  // the product's output is complete
  trace(ch, p, kTraceReady);
  if (record && threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
    store_wait(ch, p, t_done, t_prod);
  if (col >= 0) out[int64_t(row) * ld_out + col] += y;
  trace_wait(ch, p, t_done, record ? t_prod : 0, 1);
  trace(ch, p, kTraceEnd);
}

// ---- import fused with what the decode step does next ------------------------------------------
//
// A corrected product cannot run the fusions its kernel would apply (gate/up + SiLU, the RMSNorm
// after a residual product), and the next point's input would need an export kernel of its own.
// These kernels do all three after the add; grid (⌈d / 512⌉, n) of 128-thread blocks, each
// thread kThenPer columns (SiLU: pairs), prefetched before the product ends like import_kernel:
//   kThenNorm:  out[row, :d] += y; dst[row] = T(gamma ⊙ out[row] / rms(out[row])), the sum of
//               squares gathered across the row's blocks (device words ss, arrive, depart)
//   kThenSilu:  out = gate | up [n, 2·dff]; g, u += y; dst[row, j] = T(silu(g_j) · u_j)
// and, when `next` >= 0, hand dst to the CPU as point `next` (X = float(dst), header, READY)
// once every row is written.

constexpr int kThenThreads = 128;
constexpr int kThenPer = 4;
constexpr int kThenSpan = kThenThreads * kThenPer;

template <typename T, int OP>
__global__ void __launch_bounds__(kThenThreads, 8)
    import_then_kernel(float* __restrict__ out, int ld_out, int n, CompImport d, CompThen th,
                       CompChannelDev ch, int P, int p, int record) {
  __shared__ uint64_t t_done, t_prod;
  __shared__ float sh[32];
  pdl_trigger();
  trace(ch, p, kTraceEntry);
  const uint32_t seq = *ch.pass * uint32_t(P) + uint32_t(p) + 1;
  await_correction(ch, seq, record, &t_done, &t_prod);
  const int row = blockIdx.y;
  const int c0 = blockIdx.x * kThenSpan + threadIdx.x;
  constexpr int V = OP == kThenSilu ? 2 * kThenPer : kThenPer;
  float y[V];
#pragma unroll
  for (int i = 0; i < kThenPer; ++i) {
    const int c = c0 + i * kThenThreads;
    const bool ok = c < th.d;
    if constexpr (OP == kThenSilu) {
      y[2 * i] = ok ? y_at(d, ch.y, n, row, c) : 0.f;
      y[2 * i + 1] = ok ? y_at(d, ch.y, n, row, th.d + c) : 0.f;
    } else {
      y[i] = ok ? y_at(d, ch.y, n, row, c) : 0.f;
    }
  }
  pdl_wait();  // the product's output is complete
  trace(ch, p, kTraceReady);
  if (record && threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0)
    store_wait(ch, p, t_done, t_prod);
  trace_wait(ch, p, t_done, record ? t_prod : 0, OP == kThenSilu ? 3 : 2);
  const bool hand = th.next >= 0;
  if constexpr (OP == kThenSilu) {
    const float* o = out + int64_t(row) * ld_out;
    T* dst = static_cast<T*>(th.dst) + int64_t(row) * th.ld_dst;
    float* X = ch.x + int64_t(row) * th.d;
#pragma unroll
    for (int i = 0; i < kThenPer; ++i) {
      const int c = c0 + i * kThenThreads;
      if (c >= th.d) continue;
      const float g = o[c] + y[2 * i], u = o[th.d + c] + y[2 * i + 1];
      const T h = from_float<T>(g / (1.0f + expf(-g)) * u);
      dst[c] = h;
      if (hand) X[c] = to_float(h);
    }
    trace(ch, p, kTraceOp);
    if (hand && last_block(ch.counter)) {
      if (threadIdx.x == 0) {
        publish_header(ch, P, th.next, uint32_t(n));
        trace(ch, p, kTracePublish, true);
      }
    }
    trace(ch, p, kTraceEnd);
  } else {
    // The row's sum of squares across its blocks: each adds its part to ss[row], then all wait
    // for every block of the grid (they are co-resident: every block started before the next
    // kernel could launch, and the product before has finished) and normalize their own slice.
    // The last block to leave zeroes the sums and counters for the next use.
    __shared__ float row_ss;
    float* o = out + int64_t(row) * ld_out;
    float part = 0.f;
#pragma unroll
    for (int i = 0; i < kThenPer; ++i) {
      const int c = c0 + i * kThenThreads;
      if (c >= th.d) continue;
      y[i] += o[c];  // the corrected residual, kept in registers
      o[c] = y[i];
      part += y[i] * y[i];
    }
    part = block_sum(part, sh);
    if (threadIdx.x == 0) {
      const uint32_t blocks = gridDim.x * gridDim.y;
      atomicAdd(ch.ss + row, part);
      __threadfence();
      atomicAdd(ch.arrive, 1u);
      while (load_gpu_acquire(ch.arrive) < blocks) {
      }
      row_ss = atomicAdd(ch.ss + row, 0.f);
      __threadfence();
      if (atomicAdd(ch.depart, 1u) == blocks - 1) {
        for (int b = 0; b < n; ++b) ch.ss[b] = 0.f;
        *ch.arrive = 0u;
        *ch.depart = 0u;
        __threadfence();
      }
    }
    __syncthreads();
    const float inv = rsqrtf(row_ss / float(th.d) + th.eps);
    T* dst = static_cast<T*>(th.dst) + int64_t(row) * th.ld_dst;
    float* X = ch.x + int64_t(row) * th.d;
#pragma unroll
    for (int i = 0; i < kThenPer; ++i) {
      const int c = c0 + i * kThenThreads;
      if (c >= th.d) continue;
      const T v = from_float<T>(th.gamma[c] * (y[i] * inv));
      dst[c] = v;
      if (hand) X[c] = to_float(v);
    }
    trace(ch, p, kTraceOp);
    if (hand && last_block(ch.counter)) {
      if (threadIdx.x == 0) {
        publish_header(ch, P, th.next, uint32_t(n));
        trace(ch, p, kTracePublish, true);
      }
    }
    trace(ch, p, kTraceEnd);
  }
}

__global__ void pass_begin_kernel(CompChannelDev ch) {
  pdl_trigger();
  pdl_wait();
  ch.stamps[*ch.pass % kPassStampsDev].t_begin = global_ns();
}

__global__ void pass_end_kernel(CompChannelDev ch, uint32_t decode) {
  pdl_trigger();
  pdl_wait();
  const uint32_t k = *ch.pass;
  PassStampDev* s = ch.stamps + k % kPassStampsDev;
  s->t_end = global_ns();
  s->decode = decode;
  __threadfence_system();
  store_sys_release(ch.passes, k + 1);
  *ch.pass = k + 1;
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
               static_cast<const __half*>(in), ld_in, d_in, n, rows_word, ch, P, p);
      break;
    case DType::BF16:
      launch_k("comp_export", export_kernel<__nv_bfloat16>, grid, dim3(kThreads), 0, s,
               static_cast<const __nv_bfloat16*>(in), ld_in, d_in, n, rows_word, ch, P, p);
      break;
    default:
      launch_k("comp_export", export_kernel<float>, grid, dim3(kThreads), 0, s,
               static_cast<const float*>(in), ld_in, d_in, n, rows_word, ch, P, p);
      break;
  }
}

void comp_import(float* out, int ld_out, int n, const CompImport& d, const CompChannelDev& ch,
                 int P, int p, bool record_wait, bool add, cudaStream_t s) {
  int width = 0;
  for (int j = 0; j < d.n; ++j) width += d.d_out[j];
  const dim3 grid(add ? (width + kImportThreads - 1) / kImportThreads : 1, add ? n : 1);
  launch_k("comp_import", import_kernel, grid, dim3(kImportThreads), 0, s, out, ld_out, n, d, ch, P, p,
           record_wait ? 1 : 0, add ? 1 : 0);
}

void comp_import_then(DType t, float* out, int ld_out, int n, const CompImport& d,
                      const CompThen& then, const CompChannelDev& ch, int P, int p,
                      bool record_wait, cudaStream_t s) {
  if (then.op != kThenNorm && then.op != kThenSilu)
    fail(HCI_ERR_INTERNAL, "comp_import_then: operation must be kThenNorm or kThenSilu, not " +
                               std::to_string(then.op));
  if (n < 1 || n > 16)
    fail(HCI_ERR_INTERNAL, "comp_import_then: decode rows only (1..16), not " + std::to_string(n));
  const dim3 grid((then.d + kThenSpan - 1) / kThenSpan, n), block(kThenThreads);
  const int rec = record_wait ? 1 : 0;
#define HCI_THEN(T)                                                                            \
  if (then.op == kThenNorm)                                                                    \
    launch_k("comp_import_norm", import_then_kernel<T, kThenNorm>, grid, block, 0, s, out,     \
             ld_out, n, d, then, ch, P, p, rec);                                               \
  else                                                                                         \
    launch_k("comp_import_silu", import_then_kernel<T, kThenSilu>, grid, block, 0, s, out,     \
             ld_out, n, d, then, ch, P, p, rec);
  switch (t) {
    case DType::F16: HCI_THEN(__half) break;
    case DType::BF16: HCI_THEN(__nv_bfloat16) break;
    default: HCI_THEN(float) break;
  }
#undef HCI_THEN
}

void comp_pass_begin(const CompChannelDev& ch, cudaStream_t s) {
  launch_k("comp_pass_begin", pass_begin_kernel, dim3(1), dim3(1), 0, s, ch);
}

void comp_pass_end(const CompChannelDev& ch, bool decode, cudaStream_t s) {
  launch_k("comp_pass_end", pass_end_kernel, dim3(1), dim3(1), 0, s, ch, decode ? 1u : 0u);
}

}  // namespace hci::gpu
