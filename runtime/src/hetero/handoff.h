// The cpu-async hand-off between the GPU stream and the CPU compensation worker.
//
// Every value that crosses is a tagged word (the "LL" protocol of NCCL's low-latency transport):
// 64 bits = float32 value (low half) | 32-bit sequence number (high half), written with one 8-byte
// store and read with one 8-byte load, so a reader that sees the tag of the hand-off it expects
// also sees that hand-off's value. No fence, flag or counter orders the data: each word carries
// its own. Per compensation point p of forward pass k the sequence number is
// seq = k · n_points + p + 1 (computed on the device from a pass counter, so a replayed graph
// carries the right numbers), and the words live in pinned, device-mapped host memory:
//
//   GPU stream (in the captured decode graph)          CPU server (a host thread + workers)
//   1. X[i] = (x_i, seq) for every element of the      a. spin until HEAD[0] has a new tag seq;
//      point's input, HEAD[0] = (point, seq),              then until HEAD[1]'s tag is seq
//      HEAD[1] = (rows | flags, seq), in any order     b. read X[i], spinning on each until its
//   2. ... the point's backbone product(s) ...             tag is seq; compute y = B(A x)
//   3. read Y[i], spinning on each until its tag       c. Y[i] = (y_i, seq) for every output
//      is seq; add y into the product's output         d. DONE = seq (release; statistics only)
//
// Ordering guarantees: (i) the CPU never uses a stale x: it accepts X[i] only with this hand-off's
// tag, and tags only grow (32-bit, > 10^7 steps of a 400-point model; the channel is zeroed
// between runs); (ii) likewise the GPU never adds a stale or torn y; (iii) no buffer is overwritten
// while in use: the CPU writes Y of hand-off s only after it has read all of X of s, which the GPU
// wrote (element by element, each after its own read of Y of s − 1 where one kernel does both, or
// in a later kernel) only after it had read Y of s − 1; and the GPU writes X of s + 1 only after
// its product of point s + 1, which needs point s's correction, i.e. after the CPU has finished
// reading X of s (it reads X before writing Y). One point is in flight at a time, so one X and one
// Y buffer suffice. (iv) DONE is not needed for correctness: the GPU polls it only to time its
// wait for the rank controller. No host API call sits between the steps.
//
// HEAD[1]'s word: rows | kPrefillFlag (a prefill pass) | kNormFlag (X is the raw residual stream:
// the CPU applies the point's RMSNorm itself, so the GPU needs no grid-wide reduction before the
// hand-off).
//
// Compared with a READY/DONE word pair (the first protocol, 2026-11): the GPU no longer fences its
// writes of X at system scope, counts its blocks or polls a flag before reading Y, each a PCIe
// round trip on the critical path of every point.
//
// This header is the protocol's host side, written so a CPU thread can play the GPU's role in
// tests (runtime/tests/test_hetero.cpp, test_comp_server.cpp): the same loads/stores the stream
// would perform (GPU side: src/gpu/comp_kernels.cu; CPU side: comp_server.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>

namespace hci {

constexpr uint32_t kPrefillFlag = 0x80000000u;  // HEAD[1]: a prefill pass
constexpr uint32_t kNormFlag = 0x40000000u;     // HEAD[1]: X is the raw residual (CPU normalizes)
constexpr uint32_t kRowsMask = 0x3FFFFFFFu;

inline uint64_t ll_pack(float v, uint32_t seq) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return uint64_t(seq) << 32 | bits;
}
inline uint64_t ll_pack_word(uint32_t v, uint32_t seq) { return uint64_t(seq) << 32 | v; }
inline uint32_t ll_seq(uint64_t w) { return uint32_t(w >> 32); }
inline uint32_t ll_word(uint64_t w) { return uint32_t(w); }
inline float ll_value(uint64_t w) {
  const uint32_t bits = uint32_t(w);
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// The words are shared with another agent (the GPU over PCIe, or a test thread): 8-byte atomic
// accesses, relaxed (each word is self-validating; see the ordering guarantees above).
inline std::atomic<uint64_t>* ll_at(uint64_t* p) { return reinterpret_cast<std::atomic<uint64_t>*>(p); }
inline const std::atomic<uint64_t>* ll_at(const uint64_t* p) {
  return reinterpret_cast<const std::atomic<uint64_t>*>(p);
}

// Writes dst[i] = (src[i], seq), i < n.
inline void ll_store(uint64_t* dst, const float* src, int64_t n, uint32_t seq) {
  for (int64_t i = 0; i < n; ++i) ll_at(dst + i)->store(ll_pack(src[i], seq), std::memory_order_relaxed);
}

// Spins until word p carries tag `seq`; returns it. False (with *out unset) when `stop` turns true.
inline bool ll_wait(const uint64_t* p, uint32_t seq, uint64_t* out,
                    const std::atomic<bool>* stop = nullptr) {
  uint32_t spins = 0;
  for (;;) {
    const uint64_t w = ll_at(p)->load(std::memory_order_relaxed);
    if (ll_seq(w) == seq) {
      *out = w;
      return true;
    }
    if (stop && stop->load(std::memory_order_relaxed)) return false;
    if (++spins > 1024) std::this_thread::yield();
  }
}

// Reads dst[i] = value of src[i] once it carries `seq`, i < n. False when `stop` turns true first.
inline bool ll_load(const uint64_t* src, float* dst, int64_t n, uint32_t seq,
                    const std::atomic<bool>* stop = nullptr) {
  for (int64_t i = 0; i < n; ++i) {
    uint64_t w;
    if (!ll_wait(src + i, seq, &w, stop)) return false;
    dst[i] = ll_value(w);
  }
  return true;
}

// The hand-off's two header words, written by the GPU side (any order, no fence needed).
inline void ll_publish_head(uint64_t* head, uint32_t seq, uint32_t point, uint32_t rows_word) {
  ll_at(head + 1)->store(ll_pack_word(rows_word, seq), std::memory_order_relaxed);
  ll_at(head)->store(ll_pack_word(point, seq), std::memory_order_relaxed);
}

}  // namespace hci
