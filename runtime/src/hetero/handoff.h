// The cpu-async hand-off between the GPU stream and the CPU compensation worker.
//
// Per compensation point p of decode step s the protocol moves x (the point's input) to the
// CPU and the correction y back, through buffers in pinned, device-mapped host memory and two
// monotonically increasing 32-bit sequence words beside them (seq = s * n_points + p + 1):
//
//   GPU stream (in the captured decode graph)       CPU worker (a host thread)
//   1. copy x_p to host buffer X[p]
//   2. write READY = seq  (system-scope release,     a. spin until READY >= seq (acquire)
//      after 1's writes are fenced)                  b. read X[p]; compute y = B(A x)
//   3. ... backbone kernels of the layer ...         c. write Y[p]
//                                                     d. store DONE = seq (release)
//   4. wait DONE >= seq (stream wait-value)
//   5. copy/add Y[p] into the layer's output
//
// Ordering guarantees: (i) the CPU never reads X[p] before the GPU's copy of it has completed,
// because READY is written by the stream after the copy and read with acquire; (ii) the GPU
// never reads Y[p] before the CPU's writes to it are visible, because DONE is stored with release
// after them and the stream's wait precedes the read on the same stream; (iii) buffers are not
// overwritten while in use: X[p]/Y[p] of step s+1 are written only after step s's wait on
// DONE >= seq(s, p) has passed (the stream is in order), and the CPU has finished with X[p] by
// then (it stores DONE after reading X); (iv) the words only grow, so a late reader never
// mistakes an old value for a new one, and no host API call sits between the steps.
// The words are 32-bit (stream memory operations' width); 2^32 points is > 10^7 steps of a
// 400-point model, and the channel is reset between runs.
//
// As implemented, one point is in flight at a time (the GPU needs p's correction before it can
// produce p+1's input), so X[p] and Y[p] are one X and one Y buffer, the words are one pair, and
// seq is computed on the device from a pass counter so a replayed graph carries the right numbers
// (GPU side: src/gpu/comp_kernels.cu; CPU side: comp_server.h).
//
// This header is the protocol's host side, written so a CPU thread can play the GPU's role in
// tests (runtime/tests/test_hetero.cpp, test_comp_server.cpp): the same loads/stores the stream
// would perform.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace hci {

struct HandoffWords {
  alignas(64) std::atomic<uint32_t> ready{0};  // written by the GPU side
  alignas(64) std::atomic<uint32_t> done{0};   // written by the CPU side
};

// Spins until word >= seq (acquire). Returns false when `stop` becomes true first.
inline bool wait_geq(const std::atomic<uint32_t>& word, uint32_t seq,
                     const std::atomic<bool>* stop = nullptr) {
  uint32_t spins = 0;
  while (word.load(std::memory_order_acquire) < seq) {
    if (stop && stop->load(std::memory_order_relaxed)) return false;
    if (++spins > 1024) std::this_thread::yield();
  }
  return true;
}

// GPU side, step 2: publish that X[p] for `seq` is complete.
inline void publish_ready(HandoffWords& w, uint32_t seq) {
  w.ready.store(seq, std::memory_order_release);
}
// CPU side, step d: publish that Y[p] for `seq` is complete.
inline void publish_done(HandoffWords& w, uint32_t seq) {
  w.done.store(seq, std::memory_order_release);
}

}  // namespace hci
