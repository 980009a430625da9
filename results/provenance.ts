/**
 * Provenance of a measurement: code version, software, machine, input files, seed and time.
 * Nothing here throws because a tool (git, nvidia-smi) or a permission is missing: the field is
 * recorded as null instead.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join, resolve } from "node:path";

/** One GPU as reported by nvidia-smi. */
export interface GpuInfo {
  /** Product name, e.g. "NVIDIA H100 80GB HBM3". */
  name: string;
  /** Driver version. */
  driver: string;
  /** Total memory in MiB. */
  memoryMiB: number;
}

/** Where and with what a result was produced. */
export interface Provenance {
  /**
   * HEAD commit (null outside git or before the first commit) and whether tracked files have
   * uncommitted changes (null when git is unavailable; untracked files do not count, as in
   * `git describe --dirty`).
   */
  git: { commit: string | null; dirty: boolean | null };
  /** Deno version. */
  deno: string;
  /** V8 version. */
  v8: string;
  /** TypeScript version. */
  typescript: string;
  /** Operating system and kernel release, e.g. "linux 6.8.0". */
  os: string;
  /** CPU architecture, e.g. "x86_64". */
  arch: string;
  /** CPU model name from /proc/cpuinfo, or null. */
  cpu: string | null;
  /** Logical CPU cores. */
  cores: number | null;
  /** Total system memory in bytes, or null. */
  memory: number | null;
  /** GPUs from nvidia-smi, or null where it is absent or fails. */
  gpu: GpuInfo[] | null;
  /** The runtime library's version/build string, as given by the caller. */
  library: string | null;
  /** sha256 (hex) of each input file, keyed by the path as given (folders expanded). */
  files: Record<string, string>;
  /** The seed, as given. */
  seed: number | null;
  /** When this was collected, ISO 8601 UTC. */
  time: string;
}

/** Options of {@linkcode collectProvenance}. */
export interface ProvenanceOptions {
  /** Input files (model, data) to hash; a folder stands for all files under it. */
  files?: string[];
  /** The run's seed. */
  seed?: number;
  /** The runtime library's version string. */
  library?: string;
  /** Folder whose git state is recorded; default the current directory. */
  cwd?: string;
}

/**
 * Collects the provenance of a run.
 *
 * @param options files to hash, seed, library version and the git folder
 * @returns the provenance record
 * @throws Error naming the path when one of `files` does not exist
 */
export async function collectProvenance(options: ProvenanceOptions = {}): Promise<Provenance> {
  const cwd = options.cwd ?? Deno.cwd();
  const files: Record<string, string> = {};
  for (const path of options.files ?? []) {
    for (const file of await expandFiles(path)) files[file] = await hashFile(file);
  }
  const [git, cpu, gpu] = await Promise.all([gitState(cwd), cpuModel(), gpuInfo()]);
  return {
    git,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    os: [Deno.build.os, attempt(() => Deno.osRelease())].filter(Boolean).join(" "),
    arch: Deno.build.arch,
    cpu,
    cores: navigator.hardwareConcurrency ?? null,
    memory: attempt(() => Deno.systemMemoryInfo().total),
    gpu,
    library: options.library ?? null,
    files,
    seed: options.seed ?? null,
    time: new Date().toISOString(),
  };
}

const hashCache = new Map<string, string>();

/**
 * sha256 (hex) of a file, read as a stream (files can be hundreds of MB). Results are cached
 * within the process per (absolute path, size, modification time).
 *
 * @param path the file
 * @returns 64 hex digits
 * @throws Error naming the path when it does not exist or cannot be read
 */
export async function hashFile(path: string): Promise<string> {
  const abs = resolve(path);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(abs);
  } catch (error) {
    throw new Error(
      error instanceof Deno.errors.NotFound
        ? `cannot hash ${path}: it does not exist`
        : `cannot hash ${path}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const cacheKey = `${abs}\0${info.size}\0${info.mtime?.getTime() ?? "?"}`;
  const cached = hashCache.get(cacheKey);
  if (cached !== undefined) return cached;
  const hash = createHash("sha256");
  using file = await Deno.open(abs, { read: true });
  for await (const chunk of file.readable) hash.update(chunk);
  const digest = hash.digest("hex");
  hashCache.set(cacheKey, digest);
  return digest;
}

/** The files a path stands for: itself, or every file under a folder, sorted. */
async function expandFiles(path: string): Promise<string[]> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`cannot hash ${path}: it does not exist`, { cause: error });
    }
    throw error;
  }
  if (!info.isDirectory) return [path];
  const out: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    if (entry.isFile || entry.isDirectory || entry.isSymlink) {
      out.push(...await expandFiles(join(path, entry.name)));
    }
  }
  return out.sort();
}

async function run(cmd: string, args: string[], cwd?: string): Promise<string | null> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.timeout(15_000),
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout) : null;
  } catch {
    return null; // not installed, not permitted, or timed out
  }
}

async function gitState(cwd: string): Promise<Provenance["git"]> {
  const commit = await run("git", ["rev-parse", "--verify", "HEAD"], cwd);
  const status = await run("git", ["status", "--porcelain", "--untracked-files=no"], cwd);
  return {
    commit: commit?.trim() || null,
    dirty: status === null ? null : status.trim() !== "",
  };
}

async function cpuModel(): Promise<string | null> {
  try {
    const info = await Deno.readTextFile("/proc/cpuinfo");
    const line = info.split("\n").find((l) => /^(model name|Model|Hardware)\s*:/.test(l));
    return line?.slice(line.indexOf(":") + 1).trim() || null;
  } catch {
    return null;
  }
}

async function gpuInfo(): Promise<GpuInfo[] | null> {
  const out = await run("nvidia-smi", [
    "--query-gpu=name,driver_version,memory.total",
    "--format=csv,noheader,nounits",
  ]);
  if (out === null) return null;
  const gpus = out.trim().split("\n").filter((l) => l.trim() !== "").map((line) => {
    const [name, driver, memory] = line.split(",").map((s) => s.trim());
    return { name, driver, memoryMiB: Number(memory) };
  });
  return gpus.length > 0 ? gpus : null;
}

function attempt<T>(fn: () => T): T | null {
  try {
    return fn();
  } catch {
    return null;
  }
}
