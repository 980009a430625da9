// The kernel timeline report (kernel_timeline.h) on hand-made stamps: launches grouped by tag and
// ordered by their first entry, phases against the previous launch's last exit, means per kind.
#include <cstdio>
#include <string>
#include <vector>

#include "check.h"
#include "kernel_timeline.h"

using namespace hci::gpu;

namespace {

// One block: entry, release, staged, loop end, exit (ns).
KernelStamp block(int kind, int tag, int d_out, int d_in, unsigned long long t0,
                  unsigned long long t1, unsigned long long t2, unsigned long long t3,
                  unsigned long long t4) {
  KernelStamp s{};
  s.t[0] = t0;
  s.t[1] = t1;
  s.t[2] = t2;
  s.t[3] = t3;
  s.t[4] = t4;
  s.kind = kind;
  s.tag = tag;
  s.d_out = d_out;
  s.d_in = d_in;
  return s;
}

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

}  // namespace

TEST(report_orders_launches_and_measures_phases) {
  std::vector<KernelStamp> st;
  // launch tag 7 (first): two blocks, last exit at 10000 ns
  st.push_back(block(kKindQgemv4, 7, 4096, 4096, 0, 1000, 2000, 9000, 10000));
  st.push_back(block(kKindQgemv4, 7, 4096, 4096, 100, 1000, 2000, 8000, 8000));
  // attention (tag 8): one block entering before the GEMV ends, released 500 ns after it
  st.push_back(block(kKindAttention, 8, 32, 128, 9500, 10500, 0, 0, 16000));
  // the second GEMV (tag 9), stored out of order: three blocks; median release 16500, median
  // staging 1000, loop end median 20000 and last 22000, exit 22000
  st.push_back(block(kKindQgemv4, 9, 4096, 4096, 16200, 16600, 17600, 22000, 22000));
  st.push_back(block(kKindQgemv4, 9, 4096, 4096, 15000, 16500, 17500, 20000, 20000));
  st.push_back(block(kKindQgemv4, 9, 4096, 4096, 15100, 16400, 17400, 19000, 19000));
  st.push_back(KernelStamp{});  // an unused slot (kind 0) is ignored
  const std::string r = kernel_timeline_report(st.data(), st.size(), 4, 128);
  std::printf("%s", r.c_str());
  CHECK(has(r, "3 instrumented launches, 22.0 us"));
  // attention: entered 0.50 us before the GEMV's exit, released 0.50 after it, span 6.00
  CHECK(has(r, "   -0.50    0.50    0.00    0.00    0.00    0.00    6.00"));
  // the second GEMV against the attention's exit (16000): resident 16200 -> 0.20, release 0.50,
  // stage 1.00, loop 22000 - (16500 + 1000) = 4.50, tail 22000 - 20000 = 2.00, span 6.00; weight
  // bytes 4096 x 4096 / 2 + 4096 x 32 x 4 = 8.91 MB in 4.5 us = 1981 GB/s
  CHECK(has(r, "    0.20    0.50    1.00    4.50    2.00    0.00    6.00"));
  CHECK(has(r, "   1981"));
  CHECK(has(r, "sum of spans after the first launch: 12.0 us"));
}

TEST(report_without_stamps_says_so) {
  std::vector<KernelStamp> st(4);
  const std::string r = kernel_timeline_report(st.data(), st.size(), 4, 128);
  CHECK(has(r, "no stamps"));
}

int main() { return check::run_all(); }
