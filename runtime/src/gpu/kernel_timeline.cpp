#include "kernel_timeline.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <utility>
#include <vector>

namespace hci::gpu {
namespace {

// One kernel launch: its blocks' stamps reduced (ns, GPU clock).
struct Launch {
  int kind = 0, tag = 0, d_out = 0, d_in = 0, blocks = 0;
  unsigned long long first_in = ~0ull, last_in = 0;  // entry of the first / last block
  unsigned long long release = 0;                    // median PDL release
  double stage = 0;                                  // median staging time
  unsigned long long loop_med = 0, loop_last = 0;    // median / last main-loop end
  unsigned long long end = 0;                        // last exit
};

unsigned long long median_of(std::vector<unsigned long long> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
  return v[v.size() / 2];
}

std::string name_of(const Launch& l) {
  if (l.kind == kKindAttention) return "attention";
  if (l.kind == kKindQgemv4Silu) return "gate/up+silu " + std::to_string(l.d_out) + "x" +
                                        std::to_string(l.d_in);
  return "gemv " + std::to_string(l.d_out) + "x" + std::to_string(l.d_in);
}

// Phase durations of a launch against the end of the one before (µs).
struct Phases {
  double resident = 0, release = 0, stage = 0, loop = 0, tail = 0, epi = 0, span = 0, gbps = 0;
};

Phases phases_of(const Launch& l, unsigned long long prev_end, int bits, int group) {
  auto us = [](double ns) { return ns / 1000.0; };
  Phases p;
  const double pe = double(prev_end);
  p.resident = us(double(l.last_in) - pe);
  p.release = l.release ? us(double(l.release) - pe) : 0;
  p.stage = us(l.stage);
  const unsigned long long loop_from = l.release ? l.release + (unsigned long long)l.stage : 0;
  if (l.loop_last && loop_from) p.loop = us(double(l.loop_last) - double(loop_from));
  if (l.loop_last) p.tail = us(double(l.loop_last) - double(l.loop_med));
  if (l.loop_last) p.epi = us(double(l.end) - double(l.loop_last));
  p.span = us(double(l.end) - pe);
  if (l.kind != kKindAttention && p.loop > 0 && bits > 0 && group > 0) {
    const double bytes = double(l.d_out) * l.d_in * bits / 8.0 + double(l.d_out) * l.d_in / group * 4.0;
    p.gbps = bytes / (p.loop * 1e3);
  }
  return p;
}

void line(std::string& out, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void line(std::string& out, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  out += buf;
  out += '\n';
}

}  // namespace

std::string kernel_timeline_report(const KernelStamp* s, size_t n, int bits, int group) {
  std::map<std::pair<int, int>, std::vector<const KernelStamp*>> by;  // (tag, kind) -> blocks
  for (size_t i = 0; i < n; ++i)
    if (s[i].kind != 0) by[{s[i].tag, s[i].kind}].push_back(&s[i]);  // (unused slots: kind 0)
  std::vector<Launch> ls;
  for (const auto& [key, blocks] : by) {
    Launch l;
    l.tag = key.first;
    l.kind = key.second;
    l.d_out = blocks[0]->d_out;
    l.d_in = blocks[0]->d_in;
    l.blocks = int(blocks.size());
    std::vector<unsigned long long> rel, stage, loop;
    for (const KernelStamp* b : blocks) {
      l.first_in = std::min(l.first_in, b->t[0]);
      l.last_in = std::max(l.last_in, b->t[0]);
      if (b->t[1]) rel.push_back(b->t[1]);
      if (b->t[1] && b->t[2]) stage.push_back(b->t[2] - b->t[1]);
      if (b->t[3]) loop.push_back(b->t[3]);
      l.loop_last = std::max(l.loop_last, b->t[3]);
      l.end = std::max(l.end, std::max(b->t[4], b->t[3]));
    }
    l.release = median_of(rel);
    l.stage = double(median_of(stage));
    l.loop_med = median_of(loop);
    ls.push_back(l);
  }
  std::string out;
  if (ls.empty()) {
    line(out, "kernel timeline: no stamps (only the lean 4-bit GEMV and decode attention write them)");
    return out;
  }
  std::sort(ls.begin(), ls.end(), [](const Launch& a, const Launch& b) { return a.first_in < b.first_in; });
  const unsigned long long t0 = ls.front().first_in;
  line(out, "kernel timeline of one decode step: %zu instrumented launches, %.1f us from the first "
            "entry to the last exit", ls.size(), double(ls.back().end - t0) / 1000.0);
  line(out, "phases in us against the previous instrumented launch's last exit: resident = last "
            "block's entry, release = median PDL release, stage = median input staging, loop = "
            "main loop to the last block, tail = last - median block, epi = epilogue after the "
            "last loop, span = last exit; GB/s = weight bytes / loop");
  line(out, "%-26s %6s %9s %8s %7s %7s %7s %7s %7s %7s", "launch", "blocks", "at", "resident",
       "release", "stage", "loop", "tail", "epi", "span");
  // the first 12 launches and the last 4 in full; the means cover every launch after the first
  std::map<std::string, std::vector<Phases>> per;
  std::vector<std::string> order;
  unsigned long long prev_end = ls.front().first_in;
  for (size_t i = 0; i < ls.size(); ++i) {
    const Launch& l = ls[i];
    const Phases p = phases_of(l, prev_end, bits, group);
    const std::string nm = name_of(l);
    if (i > 0) {
      if (!per.count(nm)) order.push_back(nm);
      per[nm].push_back(p);
    }
    if (i < 12 || i + 4 >= ls.size())
      line(out, "%-26s %6d %9.1f %8.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f", nm.c_str(), l.blocks,
           double(l.first_in - t0) / 1000.0, p.resident, p.release, p.stage, p.loop, p.tail, p.epi,
           p.span);
    prev_end = l.end;
  }
  line(out, "means over the launches after the first:");
  line(out, "%-26s %6s %8s %7s %7s %7s %7s %7s %7s %7s", "launch", "count", "resident", "release",
       "stage", "loop", "tail", "epi", "span", "GB/s");
  double total = 0;
  for (const std::string& nm : order) {
    const auto& v = per[nm];
    Phases m;
    for (const Phases& p : v) {
      m.resident += p.resident / double(v.size());
      m.release += p.release / double(v.size());
      m.stage += p.stage / double(v.size());
      m.loop += p.loop / double(v.size());
      m.tail += p.tail / double(v.size());
      m.epi += p.epi / double(v.size());
      m.span += p.span / double(v.size());
      m.gbps += p.gbps / double(v.size());
    }
    total += m.span * double(v.size());
    line(out, "%-26s %6zu %8.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.0f", nm.c_str(), v.size(),
         m.resident, m.release, m.stage, m.loop, m.tail, m.epi, m.span, m.gbps);
  }
  line(out, "sum of spans after the first launch: %.1f us", total);
  return out;
}

}  // namespace hci::gpu
