// A persistent pool of spinning worker threads for short, latency-critical parallel sections
// (the per-layer low-rank compensation of a decode step takes microseconds, far less than a
// condition-variable wake-up). Workers can be pinned to given cores so that the GPU driver's own
// threads and the thread that feeds the GPU keep theirs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace hci {

// A barrier for the workers of one WorkerPool::run section (spinning: its waits are
// microseconds, between the phases of a compensation point).
class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  void wait() {
    const uint32_t gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      return;
    }
    while (gen_.load(std::memory_order_acquire) == gen) __builtin_ia32_pause();
  }

 private:
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<uint32_t> gen_{0};
};

class WorkerPool {
 public:
  // n_threads workers in total, the calling thread counted as worker 0. cores: optional CPU ids
  // to pin workers 0..n-1 to (worker 0's pinning applies to the calling thread when run() is
  // first called from it); empty = no pinning.
  explicit WorkerPool(int n_threads, std::vector<int> cores = {});
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int size() const { return n_; }
  // Runs fn(worker) on every worker (the caller is worker 0) and returns when all are done.
  // Not reentrant: one run at a time.
  void run(const std::function<void(int)>& fn);
  // When idle, workers spin for this many microseconds before sleeping (default 200).
  void set_spin_us(int us) { spin_us_ = us; }
  // Involuntary context switches of the pool's threads so far (Linux /proc; the caller counts once
  // it has run a section): how often the OS took a worker's core, e.g. for another process's
  // thread. -1 where unavailable.
  int64_t involuntary_switches() const;
  // Keeps the process's other threads off the pool's cores from the first run() on (default
  // off; needs pinned cores): each thread allowed on any of them is moved to its other allowed
  // cores (one with no others is left alone), and moved back when the pool is destroyed if its
  // cores are still as set. Threads created later inherit their creator's cores.
  void set_isolate(bool on) { isolate_ = on; }
  // Threads moved off the pool's cores so far (see set_isolate).
  int isolated_threads() const { return int(moved_.size()); }

 private:
  void loop(int worker);
  void keep_others_off();
  void restore_others();
  int n_;
  std::vector<int> cores_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;               // only for sleeping workers
  std::condition_variable cv_;
  const std::function<void(int)>* fn_ = nullptr;
  std::unique_ptr<std::atomic<int>[]> tids_;  // [n] Linux thread ids (0: not started yet)
  bool caller_joined_ = false;  // the caller was pinned (if cores given) and its tid recorded
  int spin_us_ = 200;
  bool isolate_ = false;
  struct Moved {
    int tid = 0;
    std::vector<unsigned char> before, after;  // cpu_set_t bytes
  };
  std::vector<Moved> moved_;
  // m.tid back on m.before, unless its cores are no longer m.after (someone moved it since)
  static void restore(const Moved& m);
  // The caller's cores before the pool pinned it, given back when the pool goes: a caller that
  // outlives the pool (a benchmark's thread, then the thread feeding the GPU) must not stay on a
  // worker core, where it would take turns with the next pool's spinning workers.
  Moved caller_;
};

// Pins the calling thread to one CPU; returns false when the OS refuses.
bool pin_current_thread(int cpu);

}  // namespace hci
