// decode_bench: batch decode throughput of a synthetic checkpoint through the public C ABI, and a
// profiler target.
//
//   decode_bench [--model llama-2-7b] [--bits 4] [--group 128] [--rank 0] [--placement none]
//                [--batch 1] [--prompt 128] [--new 128] [--repeats 5] [--graph 1]
//                [--threads N] [--controller 0|1] [--instances 1] [--tasks] [--profile-step]
//                [--sms N] [--slowdown PCT]
//
// Default: hci_gpu_bench_decode, one line of results. --profile-step: prefill, four eager decode
// steps, then one more between cuProfilerStart/Stop, so that `ncu --profile-from-start off`
// (or any CUPTI tool honouring the profiler range) sees exactly the kernels of one decode step.
// CPU placements print the compensation stats per step; --tasks lists the process's threads
// (name, allowed cores, context switches) after the run, to see who shares the workers' cores.
// --sms N: on a partition of at least N SMs (hci_gpu_params.sm_limit, an emulated smaller GPU).
// --slowdown PCT: the rank controller's budget (hci_gpu_params.controller_slowdown_pct; negative:
// ranks only, every point handed over).
// Tuning switches (HCINFER_PDL, HCINFER_FUSE*, HCINFER_QGEMV_SIMT) are read by the library.
#include <dlfcn.h>

#include <dirent.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "hcinfer_gpu.h"

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "decode_bench: %s\n", what.c_str());
  std::exit(2);
}

void check(hci_status st, const char* err, const char* what) {
  if (st != HCI_OK) die(std::string(what) + ": " + err);
}

// cuProfilerStart / cuProfilerStop from the driver, looked up at run time (no link-time
// dependency on libcuda, which build machines without a GPU may lack).
void profiler(bool start) {
  static void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (!lib) die("cannot load libcuda.so.1 for the profiler range");
  using Fn = int (*)();
  auto fn = reinterpret_cast<Fn>(dlsym(lib, start ? "cuProfilerStart" : "cuProfilerStop"));
  if (!fn || fn() != 0) die(start ? "cuProfilerStart failed" : "cuProfilerStop failed");
}

int placement_of(const std::string& s) {
  if (s == "none") return HCI_GPU_PLACE_NONE;
  if (s == "gpu") return HCI_GPU_PLACE_GPU;
  if (s == "cpu-sync") return HCI_GPU_PLACE_CPU_SYNC;
  if (s == "cpu-async") return HCI_GPU_PLACE_CPU_ASYNC;
  die("--placement must be none, gpu, cpu-sync or cpu-async, not '" + s + "'");
}

// Every thread of this process: name, last core, allowed cores, voluntary / involuntary switches.
void print_tasks() {
  DIR* d = opendir("/proc/self/task");
  if (!d) return;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string dir = std::string("/proc/self/task/") + e->d_name;
    std::string name, allowed, vol, invol;
    if (FILE* f = std::fopen((dir + "/status").c_str(), "r")) {
      char line[512];
      while (std::fgets(line, sizeof line, f)) {
        std::string l(line);
        if (!l.empty() && l.back() == '\n') l.pop_back();
        auto val = [&](const char* key) { return l.substr(std::strlen(key)); };
        if (l.rfind("Name:\t", 0) == 0) name = val("Name:\t");
        if (l.rfind("Cpus_allowed_list:\t", 0) == 0) allowed = val("Cpus_allowed_list:\t");
        if (l.rfind("voluntary_ctxt_switches:\t", 0) == 0) vol = val("voluntary_ctxt_switches:\t");
        if (l.rfind("nonvoluntary_ctxt_switches:\t", 0) == 0)
          invol = val("nonvoluntary_ctxt_switches:\t");
      }
      std::fclose(f);
    }
    int cpu = -1;
    if (FILE* f = std::fopen((dir + "/stat").c_str(), "r")) {
      char buf[2048];
      const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      buf[n] = 0;
      std::fclose(f);
      // field 39 (processor) counted after the closing parenthesis of the name
      const char* p = std::strrchr(buf, ')');
      for (int field = 2; p && *p && field < 39; ++field) p = std::strchr(p + 1, ' ');
      if (p) cpu = std::atoi(p + 1);
    }
    std::printf("  task %-8s %-16s cpu %3d allowed %-12s switches vol %s invol %s\n", e->d_name,
                name.c_str(), cpu, allowed.c_str(), vol.c_str(), invol.c_str());
  }
  closedir(d);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = "llama-2-7b", placement = "none";
  int bits = 4, group = 128, rank = 0, batch = 1, prompt = 128, n_new = 128, repeats = 5;
  int graph = 1, threads = 0, controller = 0, instances = 1, sms = 0;
  int slowdown = INT_MIN;  // unset: the library's default
  bool profile_step = false, tasks = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + a);
      return argv[++i];
    };
    auto num = [&]() {
      const std::string v = val();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end) die(a + " needs an integer, not '" + v + "'");
      return int(n);
    };
    if (a == "--model") model = val();
    else if (a == "--bits") bits = num();
    else if (a == "--group") group = num();
    else if (a == "--rank") rank = num();
    else if (a == "--placement") placement = val();
    else if (a == "--batch") batch = num();
    else if (a == "--prompt") prompt = num();
    else if (a == "--new") n_new = num();
    else if (a == "--repeats") repeats = num();
    else if (a == "--graph") graph = num();
    else if (a == "--threads") threads = num();
    else if (a == "--controller") controller = num();
    else if (a == "--slowdown") slowdown = num();
    else if (a == "--instances") instances = num();
    else if (a == "--sms") sms = num();
    else if (a == "--tasks") tasks = true;
    else if (a == "--profile-step") profile_step = true;
    else die("unknown argument '" + a + "' (see the comment at the top of decode_bench.cpp)");
  }
  char err[512] = {0};
  hci_gpu_device_info dev{};
  check(hci_gpu_get_device_info(0, &dev, err, sizeof err), err, "device info");
  if (!dev.available) die(std::string("no usable GPU: ") + dev.reason);

  hci_gpu_synth_params sp = hci_gpu_synth_default_params();
  sp.bits = bits;
  sp.group_size = group;
  sp.rank = rank;
  hci_gpu_params p = hci_gpu_default_params();
  p.max_batch = batch;
  p.n_ctx = prompt + n_new + 8;
  p.placement = placement_of(placement);
  p.use_graphs = profile_step ? 0 : graph;
  p.cpu_threads = threads;
  p.rank_controller = controller;
  if (slowdown != INT_MIN) p.controller_slowdown_pct = slowdown;
  p.sm_limit = sms;

  if (profile_step) {
    hci_gpu_model* g = nullptr;
    check(hci_gpu_model_synthetic(model.c_str(), &sp, &p, &g, err, sizeof err), err, "model");
    std::vector<int32_t> toks(static_cast<size_t>(prompt));
    for (int i = 0; i < prompt; ++i) toks[size_t(i)] = 1 + (i * 7919) % 30000;
    for (int s = 0; s < batch; ++s)
      check(hci_gpu_prefill(g, s, toks.data(), prompt, nullptr, err, sizeof err), err, "prefill");
    std::vector<int32_t> step(static_cast<size_t>(batch), 42);
    for (int k = 0; k < 4; ++k)
      check(hci_gpu_decode(g, step.data(), batch, nullptr, err, sizeof err), err, "decode");
    profiler(true);
    check(hci_gpu_decode(g, step.data(), batch, nullptr, err, sizeof err), err, "decode");
    profiler(false);
    std::printf("decode_bench: profiled one eager decode step of %s W%d batch %d at position %d\n",
                model.c_str(), bits, batch, prompt + 4);
    hci_gpu_model_free(g);
    return 0;
  }

  // a fresh model per instance: placements' host-side state (and its luck with the scheduler) is
  // per instance
  for (int inst = 0; inst < instances; ++inst) {
    hci_gpu_model* g = nullptr;
    check(hci_gpu_model_synthetic(model.c_str(), &sp, &p, &g, err, sizeof err), err, "model");
    hci_gpu_bench_params bp = hci_gpu_bench_default_params();
    bp.batch = batch;
    bp.prompt_len = prompt;
    bp.new_tokens = n_new;
    bp.repeats = repeats;
    bp.use_graph = graph;
    hci_gpu_bench_result r{};
    check(hci_gpu_bench_decode(g, &bp, &r, err, sizeof err), err, "bench");
    std::printf("%s W%d g%d %s r%d batch %d: %.1f tok/s (%.3f ms/step, min %.3f max %.3f), "
                "%lld weight B/step, graph %d\n",
                model.c_str(), bits, group, placement.c_str(), rank, batch, r.decode_tokens_per_s,
                r.decode_ms_per_step, r.decode_ms_per_step_min, r.decode_ms_per_step_max,
                (long long)r.weight_bytes_per_step, r.graph_used);
    if (sms) {
      hci_gpu_model_info info{};
      check(hci_gpu_model_get_info(g, &info, err, sizeof err), err, "info");
      std::printf("  on %d of %d SMs\n", info.sm_count, dev.sm_count);
    }
    if (p.placement >= HCI_GPU_PLACE_CPU_SYNC) {
      hci_gpu_comp_stats st{};
      check(hci_gpu_get_comp_stats(g, &st, err, sizeof err), err, "stats");
      const double n = st.steps > 0 ? double(st.steps) : 1.0;
      std::printf("  per step: cpu busy %.3f ms, gpu wait %.3f ms, worker preemptions %.2f, "
                  "rank fraction %.3f (%d workers, %lld steps)\n",
                  st.cpu_busy_ms / n, st.gpu_wait_ms / n, double(st.cpu_preemptions) / n,
                  st.rank_fraction, st.cpu_threads, (long long)st.steps);
      if (controller) {  // the ranks it chose: mean over the timed steps by linear kind
        hci_gpu_model_info info{};
        check(hci_gpu_model_get_info(g, &info, err, sizeof err), err, "info");
        const int n = info.n_layers * 7;
        std::vector<int32_t> full(static_cast<size_t>(n));
        std::vector<double> mean(static_cast<size_t>(n));
        check(hci_gpu_get_comp_ranks(g, full.data(), nullptr, mean.data(), n, err, sizeof err),
              err, "ranks");
        const char* kinds[7] = {"q", "k", "v", "o", "gate", "up", "down"};
        std::printf("  controller's mean rank / full by kind:");
        for (int k = 0; k < 7; ++k) {
          double m = 0, f = 0;
          int off = 0;
          for (int l = 0; l < info.n_layers; ++l) {
            m += mean[size_t(l * 7 + k)];
            f += full[size_t(l * 7 + k)];
            off += full[size_t(l * 7 + k)] > 0 && mean[size_t(l * 7 + k)] == 0 ? 1 : 0;
          }
          std::printf(" %s %.1f/%.0f (%d at 0)", kinds[k], m / info.n_layers, f / info.n_layers,
                      off);
        }
        std::printf("\n");
      }
    }
    if (tasks) print_tasks();
    hci_gpu_model_free(g);
  }
  return 0;
}
