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

__device__ __forceinline__ void store_sys_release(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ void store_sys_relaxed(uint32_t* p, uint32_t v) {
  asm volatile("st.relaxed.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// ---- tagged words (hetero/handoff.h): float32 value | sequence number << 32 ---------------------

__device__ __forceinline__ void ll_put(unsigned long long* p, uint32_t v, uint32_t seq) {
  const unsigned long long w = static_cast<unsigned long long>(seq) << 32 | v;
  asm volatile("st.relaxed.sys.global.u64 [%0], %1;" ::"l"(p), "l"(w) : "memory");
}

__device__ __forceinline__ void ll_put(unsigned long long* p, float v, uint32_t seq) {
  ll_put(p, __float_as_uint(v), seq);
}

// One read of a tagged word from host memory (a PCIe round trip). No "memory" clobber: a
// thread's reads of several words are all issued before the first is used, so they cost one
// round trip together, not one each (a thread with 8 words of a SiLU import took ~12 us).
__device__ __forceinline__ unsigned long long ll_read(const unsigned long long* p) {
  unsigned long long w;
  asm volatile("ld.relaxed.sys.global.u64 %0, [%1];" : "=l"(w) : "l"(p));
  return w;
}

// The value of word w (read from p) once it carries `seq`, reading p again until it does.
__device__ __forceinline__ float ll_settle(unsigned long long w, const unsigned long long* p,
                                           uint32_t seq) {
  while (static_cast<uint32_t>(w >> 32) != seq) {
    __nanosleep(32);
    w = ll_read(p);
  }
  return __uint_as_float(static_cast<uint32_t>(w));
}

// One thread of a block polls the word the CPU writes last in the block's range, then the block's
// data threads (named barrier 1: the timing warp does not take part) read their own words, as a
// rule once. Thousands of threads polling the very lines the CPU's workers are writing would make
// each of those lines bounce between the CPU's caches and the PCIe root (measured on the H100
// host: cpu-async rank 8 at 104-113 tok/s, the GPU waiting 84 us for q/k/v and gate/up).
// With `seen_at` (the recording block), thread 0 also stores the GPU clock at which the poll that
// found the word was issued, and in *missed whether an earlier poll had not: then the CPU
// published the correction just before seen_at (within a poll's round trip), else at some time
// before the first look.
__device__ __forceinline__ void ll_await_block(const unsigned long long* last, uint32_t seq,
                                               uint64_t* seen_at = nullptr,
                                               int* missed = nullptr) {
  if (threadIdx.x == 0) {
    int miss = 0;
    uint64_t t;
    for (;;) {
      t = global_ns();
      unsigned long long w;
      asm volatile("ld.relaxed.sys.global.u64 %0, [%1];" : "=l"(w) : "l"(last) : "memory");
      if (static_cast<uint32_t>(w >> 32) == seq) break;
      ++miss;
      __nanosleep(64);
    }
    if (seen_at) {
      *seen_at = t;
      *missed = miss;
    }
  }
  asm volatile("bar.sync 1, %0;" ::"n"(128) : "memory");
}

#ifndef HCI_OPTIMISTIC_Y  // (A/B builds: 0 polls first, as before 2026-11-22)
#define HCI_OPTIMISTIC_Y 1
#endif

// True in every data thread (named barrier 1, the 128 of them) when v is true in all.
__device__ __forceinline__ bool all_data_threads(bool v) {
  int r;
  asm volatile(
      "{ .reg .pred p, q; setp.ne.s32 q, %1, 0; bar.red.and.pred p, 1, %2, q; selp.s32 %0, 1, 0, "
      "p; }"
      : "=r"(r)
      : "r"(int(v)), "n"(128)
      : "memory");
  return r != 0;
}

// A block's data threads take their y words wd[i] (read from ptr[i], nullptr: none) once they all
// carry `seq`. Optimistic: the words read first (issued by the caller, thread 0's clock at that
// time in t_first) are used where every thread's carry the tag, the usual case when the CPU is
// early (one PCIe round trip instead of a poll's and then the reads': the import blocks of a
// product that fills the GPU become resident only as it ends, so both were on the critical path);
// else thread 0 polls the word the CPU writes last (ll_await_block) and each thread reads its stale
// words again. With `seen_at` (the recording block): as ll_await_block, with
// *missed = 1 where the first reads missed.
template <int V>
__device__ __forceinline__ void ll_gather_block(const unsigned long long* const (&ptr)[V],
                                                unsigned long long (&wd)[V],
                                                const unsigned long long* last, uint32_t seq,
                                                uint64_t t_first, uint64_t* seen_at,
                                                int* missed) {
  bool ok = HCI_OPTIMISTIC_Y != 0;
#pragma unroll
  for (int i = 0; i < V; ++i)
    if (ptr[i] && static_cast<uint32_t>(wd[i] >> 32) != seq) ok = false;
  if (all_data_threads(ok)) {
    if (seen_at && threadIdx.x == 0) {
      *seen_at = t_first;
      *missed = 0;
    }
    return;
  }
  ll_await_block(last, seq, seen_at, missed);
  if (seen_at && threadIdx.x == 0) *missed = 1;
#pragma unroll
  for (int i = 0; i < V; ++i)
    if (ptr[i]) wd[i] = __float_as_uint(ll_settle(wd[i], ptr[i], seq));  // (the value bits)
}

__device__ __forceinline__ uint32_t point_seq(const CompChannelDev& ch, int P, int p) {
  return *ch.pass * uint32_t(P) + uint32_t(p) + 1;
}

// HEAD of hand-off `seq` (point p's input): any time after the previous hand-off's correction was
// read (the CPU looks for a new HEAD only once it has served that one).
__device__ __forceinline__ void publish_head(const CompChannelDev& ch, uint32_t seq, int p,
                                             uint32_t rows_word) {
  ll_put(ch.head + 1, rows_word, seq);
  ll_put(ch.head, uint32_t(p), seq);
}

// Point p's input is all handed over now (its window starts): device clock into x_at[p]. One
// block's stamp after its own words: the blocks of an export or import write theirs together.
__device__ __forceinline__ void stamp_x(const CompChannelDev& ch, int p) {
  if (ch.x_at) ch.x_at[p] = global_ns();
}

// HCINFER_HANDOFF_TRACE: point p's stamp k (from the recording thread).
__device__ __forceinline__ void trace(const CompChannelDev& ch, int p, int k, uint64_t t) {
  if (ch.trace) ch.trace[p * kTraceSlots + k] = t;
}

// in [n, ld_in] → X [n, d_in] tagged words in mapped host memory, and HEAD; grid (chunks of d_in,
// n). No fence: every word carries its tag.
template <typename T>
__global__ void export_kernel(const T* __restrict__ in, int ld_in, int d_in, int n,
                              uint32_t rows_word, CompChannelDev ch, int P, int p) {
  pdl_trigger();
  pdl_wait();
  const uint32_t seq = point_seq(ch, P, p);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) publish_head(ch, seq, p, rows_word);
  const int row = blockIdx.y;
  const int c0 = blockIdx.x * kChunk;
  const int c1 = min(d_in, c0 + kChunk);
  for (int c = c0 + threadIdx.x; c < c1; c += kThreads)
    ll_put(ch.x + int64_t(row) * d_in + c, to_float(in[int64_t(row) * ld_in + c]), seq);
  // the hand-off time of the point's window (the last block, once its words are written)
  if (blockIdx.x == gridDim.x - 1 && blockIdx.y == gridDim.y - 1) {
    __syncthreads();
    if (threadIdx.x == 0) stamp_x(ch, p);
  }
}

// ---- import: take the CPU's correction and add it -----------------------------------------------
//
// Every kernel triggers its dependents at its start (launch.cuh), so an import kernel is resident
// while the backbone product before it still runs. It uses that time: every thread reads its y
// words from mapped host memory (PCIe round trips) until they carry this hand-off's tag, *before*
// griddepcontrol.wait; only the add into the product's output waits for the product. Reading
// `pass` before the wait is safe: it changes only at the end of a pass, and the next pass starts
// behind a full dependency (a graph launch or a cuBLAS kernel).
//
// GPU wait: the block holding the last columns (the CPU writes them last: its workers take the
// tiles in order) has one more warp, whose first thread waits for the product alone and stamps
// the time; after a barrier with the data threads (their y in) the block stamps again, and the
// wait is the difference (0 when the correction was there first). With `record`, stored in
// wait_ns[p]; the rank controller works from it.

constexpr int kImportThreads = 128;  // data threads of an import block (bar.sync 1, 128 below)
constexpr int kTimerThreads = 32;    // the timing warp

// The timing warp's part; returns in every thread after the barrier, with the recording block's
// thread 0 holding the wait in *w (ns) and the trace stamped.
// Also the point's window (x handed over to the product's end) and, where the recording block's
// first look at y missed it, the turnaround the GPU saw (x handed over to y found: *turn; 0 when
// the correction was there at the first look).
struct WaitTimes {
  uint64_t t_prod, w, x_at, window, seen_at, turn;
  int missed;
};

__device__ __forceinline__ void time_wait(const CompChannelDev& ch, int p, bool recorder,
                                          bool timed, WaitTimes* wt) {
  if (recorder && timed && threadIdx.x == kImportThreads) {
    pdl_wait();
    wt->t_prod = global_ns();
    // x_at[p] was stamped by a kernel before the product (visible past the wait); 0 or a clock
    // after t_prod (not stamped this pass): no window
    const uint64_t xa = ch.x_at ? ch.x_at[p] : 0;
    wt->x_at = xa > 0 && xa < wt->t_prod ? xa : 0;
    wt->window = wt->x_at ? wt->t_prod - wt->x_at : 0;
  }
  __syncthreads();
  if (recorder && timed && threadIdx.x == 0) {
    const uint64_t t_both = global_ns();
    wt->w = t_both > wt->t_prod ? t_both - wt->t_prod : 0;
    wt->turn = wt->missed && wt->x_at && wt->seen_at > wt->x_at ? wt->seen_at - wt->x_at : 0;
    trace(ch, p, kTraceProd, wt->t_prod);
    trace(ch, p, kTraceDone, t_both);
  }
}

__device__ __forceinline__ void store_wait(const CompChannelDev& ch, int p, const WaitTimes& wt) {
  // relaxed: read by the server once the next hand-off's HEAD is visible (a statistic: a late
  // value only shifts the controller's view by one pass)
  auto u32 = [](uint64_t v) { return uint32_t(v > 0xFFFFFFFFull ? 0xFFFFFFFFull : v); };
  if (ch.window_ns) store_sys_relaxed(ch.window_ns + p, u32(wt.window));
  if (ch.turn_ns) store_sys_relaxed(ch.turn_ns + p, u32(wt.turn));
  store_sys_relaxed(ch.wait_ns + p, u32(wt.w));
}

// The y word of concatenated output column c of `row` (c < Σ_j d_out_j) and, in *col, the column
// of the product's output it adds to. Y = y_0 | y_1 | ..., y_j [n, d_out_j].
__device__ __forceinline__ const unsigned long long* y_word(const CompImport& d,
                                                            const unsigned long long* Y, int n,
                                                            int row, int c, int* col) {
  int off = 0;
  for (int j = 0; j < d.n; ++j) {
    if (c < off + d.d_out[j]) {
      *col = d.col[j] + (c - off);
      return Y + int64_t(n) * off + int64_t(row) * d.d_out[j] + (c - off);
    }
    off += d.d_out[j];
  }
  *col = -1;
  return nullptr;
}

// out[row, col_j + c] += y_j[row, c] (with `add`); grid (⌈Σ_j d_out_j / 128⌉, n), one element
// per data thread so every read of y is in flight at once. Without `add` (cpu-sync's wait before
// the product) one block whose thread 0 waits for DONE (the CPU stores it after all of Y).
__global__ void __launch_bounds__(kImportThreads + kTimerThreads)
    import_kernel(float* __restrict__ out, int ld_out, int n, CompImport d, CompChannelDev ch,
                  int P, int p, int record, int add) {
  __shared__ WaitTimes wt;
  if (threadIdx.x == 0) {  // (thread 0 alone writes and reads these until time_wait's barrier)
    wt.missed = 0;
    wt.seen_at = 0;
  }
  pdl_trigger();
  const bool recorder = blockIdx.x == gridDim.x - 1 && blockIdx.y == gridDim.y - 1;
  const bool timed = record || ch.trace;
  if (recorder && threadIdx.x == 0) trace(ch, p, kTraceEntry, global_ns());
  const uint32_t seq = point_seq(ch, P, p);
  const int row = blockIdx.y;
  float y = 0.f;
  int col = -1;
  if (threadIdx.x < kImportThreads) {
    if (add) {
      int width = 0;
      for (int j = 0; j < d.n; ++j) width += d.d_out[j];
      const int c = blockIdx.x * kImportThreads + threadIdx.x;
      int last_col;
      const unsigned long long* last =
          y_word(d, ch.y, n, row, min(width, (blockIdx.x + 1) * kImportThreads) - 1, &last_col);
      const uint64_t t_first = threadIdx.x == 0 ? global_ns() : 0;
      const unsigned long long* ptr[1] = {c < width ? y_word(d, ch.y, n, row, c, &col) : nullptr};
      unsigned long long wd[1] = {ptr[0] ? ll_read(ptr[0]) : 0ull};
      ll_gather_block(ptr, wd, last, seq, t_first, recorder && timed ? &wt.seen_at : nullptr,
                      &wt.missed);
      if (ptr[0]) y = __uint_as_float(static_cast<uint32_t>(wd[0]));
    } else if (threadIdx.x == 0) {
      while (int32_t(load_sys_acquire(ch.done) - seq) < 0) {
      }
    }
  }
  time_wait(ch, p, recorder, timed, &wt);
  pdl_wait();  // the product's output is complete
  if (recorder && threadIdx.x == 0) {
    if (record) store_wait(ch, p, wt);
    trace(ch, p, kTraceReady, global_ns());
    trace(ch, p, kTraceKind, 1);
  }
  if (col >= 0) out[int64_t(row) * ld_out + col] += y;
  if (recorder && threadIdx.x == 0) trace(ch, p, kTraceEnd, global_ns());
}

// ---- import fused with what the decode step does next ------------------------------------------
//
// A corrected product cannot run the fusions its kernel would apply (gate/up + SiLU, the RMSNorm
// after a residual product), and the next point's input would need an export kernel of its own.
// These kernels do what is needed after the add; grid (⌈d / 512⌉, n) of 128 data threads (+ the
// timing warp), each thread kThenPer columns (SiLU: pairs), read before the product ends like
// import_kernel:
//   kThenAdd:   out[row, :d] += y; with `next` the corrected residual rows are point next's input,
//               handed over raw (kNormFlag: the CPU applies the RMSNorm, so no grid-wide sum of
//               squares sits here; the next product normalizes on its own)
//   kThenSilu:  out = gate | up [n, 2·dff]; g, u += y; dst[row, j] = T(silu(g_j) · u_j), with
//               `next` handed over (X = float(dst))
// HEAD of `next` is written once this block's y is in (so after the CPU served point p).

constexpr int kThenPer = 4;
constexpr int kThenSpan = kImportThreads * kThenPer;

template <typename T, int OP>
__global__ void __launch_bounds__(kImportThreads + kTimerThreads)
    import_then_kernel(float* __restrict__ out, int ld_out, int n, CompImport d, CompThen th,
                       CompChannelDev ch, int P, int p, int record) {
  __shared__ WaitTimes wt;
  if (threadIdx.x == 0) {  // (thread 0 alone writes and reads these until time_wait's barrier)
    wt.missed = 0;
    wt.seen_at = 0;
  }
  pdl_trigger();
  const bool recorder = blockIdx.x == gridDim.x - 1 && blockIdx.y == gridDim.y - 1;
  const bool timed = record || ch.trace;
  if (recorder && threadIdx.x == 0) trace(ch, p, kTraceEntry, global_ns());
  const uint32_t seq = point_seq(ch, P, p);
  const int row = blockIdx.y;
  const int c0 = blockIdx.x * kThenSpan + threadIdx.x;
  constexpr int V = OP == kThenSilu ? 2 * kThenPer : kThenPer;
  float y[V];
  int col;
  if (threadIdx.x < kImportThreads) {
    const int c_last = min(th.d, (blockIdx.x + 1) * kThenSpan) - 1;
    const unsigned long long* last =
        y_word(d, ch.y, n, row, OP == kThenSilu ? th.d + c_last : c_last, &col);
    // every word's read issued first (one round trip for all), then gathered
    const uint64_t t_first = threadIdx.x == 0 ? global_ns() : 0;
    const unsigned long long* ptr[V];
    unsigned long long wd[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int c = c0 + (OP == kThenSilu ? i / 2 : i) * kImportThreads;
      const int cc = OP == kThenSilu && (i & 1) ? th.d + c : c;
      ptr[i] = c < th.d ? y_word(d, ch.y, n, row, cc, &col) : nullptr;
      wd[i] = ptr[i] ? ll_read(ptr[i]) : 0ull;
    }
    ll_gather_block(ptr, wd, last, seq, t_first, recorder && timed ? &wt.seen_at : nullptr,
                    &wt.missed);
#pragma unroll
    for (int i = 0; i < V; ++i) y[i] = ptr[i] ? __uint_as_float(static_cast<uint32_t>(wd[i])) : 0.f;
  }
  time_wait(ch, p, recorder, timed, &wt);
  const bool hand = th.next >= 0;
  const uint32_t next_seq = seq + uint32_t(th.next - p);
  if (hand && blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0)
    publish_head(ch, next_seq, th.next,
                 uint32_t(n) | (OP == kThenAdd ? 0x40000000u /* kNormFlag */ : 0u));
  pdl_wait();  // the product's output is complete
  if (recorder && threadIdx.x == 0) {
    if (record) store_wait(ch, p, wt);
    trace(ch, p, kTraceReady, global_ns());
    trace(ch, p, kTraceKind, OP == kThenSilu ? 3 : 2);
  }
  if (threadIdx.x < kImportThreads) {
    float* o = out + int64_t(row) * ld_out;
    unsigned long long* X = ch.x + int64_t(row) * th.d;
    if constexpr (OP == kThenSilu) {
      T* dst = static_cast<T*>(th.dst) + int64_t(row) * th.ld_dst;
#pragma unroll
      for (int i = 0; i < kThenPer; ++i) {
        const int c = c0 + i * kImportThreads;
        if (c >= th.d) continue;
        const float g = o[c] + y[2 * i], u = o[th.d + c] + y[2 * i + 1];
        const T h = from_float<T>(g / (1.0f + expf(-g)) * u);
        dst[c] = h;
        if (hand) ll_put(X + c, to_float(h), next_seq);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kThenPer; ++i) {
        const int c = c0 + i * kImportThreads;
        if (c >= th.d) continue;
        const float v = o[c] + y[i];
        o[c] = v;
        if (hand) ll_put(X + c, v, next_seq);
      }
    }
  }
  if (recorder) {
    if (hand) __syncthreads();  // (block-uniform) the block's words of `next` are written
    if (threadIdx.x == 0) {
      const uint64_t t = global_ns();
      if (hand) stamp_x(ch, th.next);
      trace(ch, p, kTraceOp, t);
      trace(ch, p, kTraceEnd, t);
    }
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
  // HEAD[1]: 0x80000000 marks a prefill pass (hetero/handoff.h kPrefillFlag)
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
  launch_k("comp_import", import_kernel, grid, dim3(kImportThreads + kTimerThreads), 0, s, out,
           ld_out, n, d, ch, P, p, record_wait ? 1 : 0, add ? 1 : 0);
}

void comp_import_then(DType t, float* out, int ld_out, int n, const CompImport& d,
                      const CompThen& then, const CompChannelDev& ch, int P, int p,
                      bool record_wait, cudaStream_t s) {
  if (then.op != kThenAdd && then.op != kThenSilu)
    fail(HCI_ERR_INTERNAL, "comp_import_then: operation must be kThenAdd or kThenSilu, not " +
                               std::to_string(then.op));
  if (then.next >= 0 && then.next <= p)
    fail(HCI_ERR_INTERNAL, "comp_import_then: the next point must come after point " +
                               std::to_string(p));
  const dim3 grid((then.d + kThenSpan - 1) / kThenSpan, n), block(kImportThreads + kTimerThreads);
  const int rec = record_wait ? 1 : 0;
#define HCI_THEN(T)                                                                            \
  if (then.op == kThenAdd)                                                                     \
    launch_k("comp_import_add", import_then_kernel<T, kThenAdd>, grid, block, 0, s, out,       \
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
