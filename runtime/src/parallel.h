// A minimal parallel-for over independent items with a fixed number of std::threads.
// Exceptions from workers are captured and the first one is rethrown on the calling thread.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hci {

// Calls fn(item, worker) for item in [0, n) on min(n_threads, n) workers.
inline void parallel_for(int64_t n, int n_threads, const std::function<void(int64_t, int)>& fn) {
  const int workers = int(std::max<int64_t>(1, std::min<int64_t>(n_threads, n)));
  std::atomic<int64_t> next{0};
  std::exception_ptr first_error;
  std::mutex mu;
  auto body = [&](int worker) {
    for (;;) {
      const int64_t i = next.fetch_add(1);
      if (i >= n) return;
      try {
        fn(i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!first_error) first_error = std::current_exception();
        next.store(n);  // stop handing out items
        return;
      }
    }
  };
  if (workers == 1) {
    body(0);
  } else {
    std::vector<std::thread> threads;
    for (int w = 1; w < workers; ++w) threads.emplace_back(body, w);
    body(0);
    for (auto& t : threads) t.join();
  }
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace hci
