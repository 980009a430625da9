/**
 * `deno task bench <command>`: the GPU backend's measurements.
 *
 *   device                       GPU, driver and build; measured HBM and pinned bandwidths
 *   throughput --config FILE     the `throughput` experiment (tokens/s vs roofline, budgets)
 *   hetero --config FILE         the `hetero_throughput` experiment (compensation on the GPU,
 *                                the CPU or overlapped; budgets; the rank controller)
 *   accuracy --model DIR --data FILE
 *                                GPU vs CPU perplexity per weight format, greedy tokens
 *   controller --model DIR --data FILE
 *                                the rank controller's speed and the perplexity at the ranks
 *                                it used (`controller_accuracy`)
 *
 * Without a usable GPU (a build without CUDA, no device) every command says so and why, and
 * points at the CPU entry points (`deno task eval`, `deno task generate`).
 *
 * @module
 */

import { readConfigFile } from "../experiments/config_file.ts";
import { runExperiment } from "../experiments/experiment.ts";
import { controllerTables, runControllerAccuracy } from "../experiments/controller_accuracy.ts";
import { accuracyTables, runGpuAccuracy } from "../experiments/gpu_accuracy.ts";
import {
  HeteroConfigSchema,
  heteroTables,
  heteroThroughput,
} from "../experiments/hetero_throughput.ts";
import { parseConfig } from "../experiments/schema.ts";
import { throughput, ThroughputConfigSchema, throughputTables } from "../experiments/throughput.ts";
import { deviceInfo, measureBandwidth } from "../ffi/gpu.ts";
import { intOption, parseCli, runMain, UsageError } from "./args.ts";
import { progressReporter } from "./progress.ts";

const USAGE = `deno task bench <command> [options]

  device                   print the GPU and build, and measure HBM / pinned bandwidth
    --bytes N              buffer size for the bandwidth measurement (default 2 GiB)

  throughput --config FILE [--out DIR]
                           run the throughput experiment (see experiments/configs/throughput_*.json);
                           results.jsonl (resumable), table.md and table.csv in DIR
                           (default results/runs/throughput-<config name>)

  hetero --config FILE [--out DIR]
                           run the hetero_throughput experiment (see
                           experiments/configs/hetero_throughput_*.json): decode tok/s with the
                           compensation on the GPU, on the CPU (sync / overlapped), under budgets,
                           with the rank controller; results in DIR (default
                           results/runs/hetero-<config name>)

  accuracy --model DIR --data FILE [--out DIR] [--seq N] [--max-windows N] [--formats LIST]
                           GPU vs CPU perplexity (fp16, bf16, w4g128, w4g128-r16, w3g128, w8g128
                           by default; LIST is comma-separated) and greedy tokens on the model's
                           reference prompts (default DIR results/runs/gpu-accuracy)

  controller --model DIR --data FILE [--out DIR] [--rank N] [--threads LIST] [--budgets LIST]
             [--sms N] [--new N] [--seq N] [--max-windows N]
                           W4 g128 with rank-N compensation (default 32) on every linear, batch-1
                           decode with cpu-async: the backbone alone, every rank full, and the rank
                           controller per CPU thread count (LIST, default 0,2,1; 0 = the library's
                           default) and budget (percent, -1 = ranks only; default 8; a list that
                           starts with -1 as --budgets=-1,8), with the perplexity at the ranks it
                           used (default DIR results/runs/controller)

Without a usable GPU the commands explain why and exit with code 3; the CPU path is
\`deno task eval\` / \`deno task generate\`.`;

function requireGpu(): void {
  const info = deviceInfo();
  if (!info.available) {
    console.error(
      `bench: no usable GPU: ${info.reason}\n` +
        `The CPU reference path still works: deno task eval / deno task generate.`,
    );
    Deno.exit(3);
  }
}

await runMain(async () => {
  const { values, positionals } = parseCli(Deno.args, {
    config: { type: "string" },
    out: { type: "string" },
    model: { type: "string" },
    data: { type: "string" },
    seq: { type: "string" },
    "max-windows": { type: "string" },
    formats: { type: "string" },
    bytes: { type: "string" },
    rank: { type: "string" },
    threads: { type: "string" },
    budgets: { type: "string" },
    sms: { type: "string" },
    new: { type: "string" },
  }, USAGE);
  const intList = (v: string | undefined, name: string, min: number) =>
    v?.split(",").map((s) => intOption(s.trim(), name, 0, min));
  const command = positionals[0];
  switch (command) {
    case "device": {
      const info = deviceInfo();
      console.log(JSON.stringify(info, null, 2));
      if (!info.available) {
        console.error(`no usable GPU: ${info.reason}`);
        Deno.exit(3);
      }
      const bytes = intOption(values.bytes, "bytes", 2 ** 31, 1 << 20);
      console.log(JSON.stringify(await measureBandwidth({ bytes, repeats: 10 }), null, 2));
      return;
    }
    case "throughput": {
      if (!values.config) throw new UsageError(`--config is required\n\n${USAGE}`);
      requireGpu();
      const config = parseConfig(
        ThroughputConfigSchema,
        await readConfigFile(values.config),
        values.config,
      );
      const name = values.config.replace(/^.*\//, "").replace(/\.json$/, "");
      const outDir = values.out ?? `results/runs/throughput-${name}`;
      const records = await runExperiment(throughput, config, {
        outDir,
        onProgress: progressReporter(throughput.describePoint),
      });
      console.log(throughputTables(records));
      return;
    }
    case "hetero": {
      if (!values.config) throw new UsageError(`--config is required\n\n${USAGE}`);
      requireGpu();
      const config = parseConfig(
        HeteroConfigSchema,
        await readConfigFile(values.config),
        values.config,
      );
      const name = values.config.replace(/^.*\//, "").replace(/\.json$/, "");
      const outDir = values.out ?? `results/runs/hetero-${name}`;
      const records = await runExperiment(heteroThroughput, config, {
        outDir,
        onProgress: progressReporter(heteroThroughput.describePoint),
      });
      console.log(heteroTables(records));
      return;
    }
    case "accuracy": {
      if (!values.model || !values.data) {
        throw new UsageError(`--model and --data are required\n\n${USAGE}`);
      }
      requireGpu();
      const records = await runGpuAccuracy({
        model: values.model,
        data: values.data,
        seqLen: intOption(values.seq, "seq", 512, 2),
        maxWindows: intOption(values["max-windows"], "max-windows", 64, 0),
        formats: values.formats?.split(",").map((s) => s.trim()).filter(Boolean),
        outDir: values.out ?? "results/runs/gpu-accuracy",
      });
      console.log(accuracyTables(records));
      if (records.some((r) => !r.metrics.pass)) {
        console.error("bench accuracy: some checks did not pass");
        Deno.exit(1);
      }
      return;
    }
    case "controller": {
      if (!values.model || !values.data) {
        throw new UsageError(`--model and --data are required\n\n${USAGE}`);
      }
      requireGpu();
      const records = await runControllerAccuracy({
        model: values.model,
        data: values.data,
        rank: intOption(values.rank, "rank", 32, 1),
        cpuThreads: intList(values.threads, "threads", 0),
        slowdownPcts: intList(values.budgets, "budgets", -1),
        gpuSms: intOption(values.sms, "sms", 0, 0),
        newTokens: intOption(values.new, "new", 256, 1),
        seqLen: intOption(values.seq, "seq", 256, 2),
        maxWindows: intOption(values["max-windows"], "max-windows", 32, 0),
        outDir: values.out ?? "results/runs/controller",
      });
      console.log(controllerTables(records));
      return;
    }
    default:
      throw new UsageError(
        command ? `unknown command '${command}'\n\n${USAGE}` : `a command is required\n\n${USAGE}`,
      );
  }
});
