#include "hetero/worker_pool.h"

#include <pthread.h>
#include <sched.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <dirent.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>

namespace hci {

bool pin_current_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

WorkerPool::WorkerPool(int n_threads, std::vector<int> cores)
    : n_(n_threads < 1 ? 1 : n_threads), cores_(std::move(cores)),
      tids_(new std::atomic<int>[size_t(n_threads < 1 ? 1 : n_threads)]) {
  for (int w = 0; w < n_; ++w) tids_[size_t(w)].store(0, std::memory_order_relaxed);
  for (int w = 1; w < n_; ++w) threads_.emplace_back([this, w] { loop(w); });
}

WorkerPool::~WorkerPool() {
  stop_.store(true, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  restore_others();
  restore(caller_);  // the caller back on its own cores
}

void WorkerPool::keep_others_off() {
  cpu_set_t pool;
  CPU_ZERO(&pool);
  for (int c : cores_)
    if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &pool);
  DIR* d = opendir("/proc/self/task");
  if (!d) return;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const int tid = std::atoi(e->d_name);
    cpu_set_t now, kept;
    if (sched_getaffinity(tid, sizeof now, &now) != 0) continue;
    CPU_AND(&kept, &now, &pool);
    if (CPU_COUNT(&kept) == 0) continue;  // not on the pool's cores
    CPU_XOR(&kept, &now, &kept);          // now minus the pool's cores
    if (CPU_COUNT(&kept) == 0) continue;  // the pool's own threads, or nowhere else to go
    if (sched_setaffinity(tid, sizeof kept, &kept) != 0) continue;
    Moved m;
    m.tid = tid;
    m.before.assign(reinterpret_cast<unsigned char*>(&now),
                    reinterpret_cast<unsigned char*>(&now) + sizeof now);
    m.after.assign(reinterpret_cast<unsigned char*>(&kept),
                   reinterpret_cast<unsigned char*>(&kept) + sizeof kept);
    moved_.push_back(std::move(m));
  }
  closedir(d);
}

void WorkerPool::restore(const Moved& m) {
  cpu_set_t now;
  if (m.tid == 0 || sched_getaffinity(m.tid, sizeof now, &now) != 0) return;  // none, or gone
  if (std::memcmp(&now, m.after.data(), sizeof now) != 0) return;  // changed by its owner since
  sched_setaffinity(m.tid, sizeof now, reinterpret_cast<const cpu_set_t*>(m.before.data()));
}

void WorkerPool::restore_others() {
  for (const Moved& m : moved_) restore(m);
  moved_.clear();
}

void WorkerPool::run(const std::function<void(int)>& fn) {
  if (!caller_joined_) {
    const int tid = int(syscall(SYS_gettid));
    cpu_set_t before;
    if (!cores_.empty() && sched_getaffinity(0, sizeof before, &before) == 0 &&
        pin_current_thread(cores_[0])) {
      caller_.tid = tid;
      caller_.before.assign(reinterpret_cast<unsigned char*>(&before),
                            reinterpret_cast<unsigned char*>(&before) + sizeof before);
      cpu_set_t after;
      CPU_ZERO(&after);
      CPU_SET(cores_[0], &after);
      caller_.after.assign(reinterpret_cast<unsigned char*>(&after),
                           reinterpret_cast<unsigned char*>(&after) + sizeof after);
    }
    tids_[0].store(tid, std::memory_order_release);
    caller_joined_ = true;
    if (isolate_ && !cores_.empty()) {
      // the workers pin themselves first (a thread allowed on pool cores only is left alone)
      for (int w = 1; w < n_; ++w)
        while (tids_[size_t(w)].load(std::memory_order_acquire) == 0) std::this_thread::yield();
      keep_others_off();
    }
  }
  fn_ = &fn;
  pending_.store(n_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);  // publishes fn_
  }
  cv_.notify_all();
  fn(0);
  while (pending_.load(std::memory_order_acquire) != 0) __builtin_ia32_pause();
  fn_ = nullptr;
}

void WorkerPool::loop(int worker) {
  if (worker < int(cores_.size())) pin_current_thread(cores_[size_t(worker)]);
  tids_[size_t(worker)].store(int(syscall(SYS_gettid)), std::memory_order_release);
  uint64_t seen = 0;
  for (;;) {
    // spin briefly for the next generation, then block on it
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (uint32_t i = 0; g == seen; ++i) {
      __builtin_ia32_pause();
      g = generation_.load(std::memory_order_acquire);
      if ((i & 255) == 255 && std::chrono::steady_clock::now() >= until) break;
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      g = generation_.load(std::memory_order_acquire);
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire)) return;
    (*fn_)(worker);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

int64_t WorkerPool::involuntary_switches() const {
  int64_t sum = 0;
  for (int w = 0; w < n_; ++w) {
    const int tid = tids_[size_t(w)].load(std::memory_order_acquire);
    if (tid == 0) continue;
    std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/status");
    if (!f) return -1;
    std::string line;
    const std::string key = "nonvoluntary_ctxt_switches:";
    bool found = false;
    while (std::getline(f, line))
      if (line.compare(0, key.size(), key) == 0) {
        sum += std::stoll(line.substr(key.size()));
        found = true;
        break;
      }
    if (!found) return -1;
  }
  return sum;
}

}  // namespace hci
