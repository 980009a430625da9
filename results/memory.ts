/**
 * Storage cost of a quantized, compensated model, as bits per weight of its quantized linear
 * layers:
 *
 *   bits per weight = (Σ_layers d_out·d_in·b + d_out·⌈d_in/g⌉·32 + r·(d_in + d_out)·16) /
 *                     Σ_layers d_out·d_in
 *
 * where b is the weight bit width, g the group size (d_in for one group per output row), each
 * group stores an fp16 scale and an fp16 zero point (32 bits), and the rank-r compensation
 * branch `B (d_out × r)`, `A (r × d_in)` is stored in fp16. Unquantized weights (bits 16) count
 * as fp16: 16 bits per weight. Embeddings and the output head stay full precision in every
 * setting and are not counted.
 *
 * @module
 */

/** The shape of one linear layer's weight `W (d_out × d_in)`. */
export interface LinearShape {
  /** Input features (columns of W). */
  dIn: number;
  /** Output features (rows of W). */
  dOut: number;
}

/** The fields of a Hugging Face LLaMA-style `config.json` that fix the linear shapes. */
export interface LlamaShapeConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
}

/**
 * The quantized linear layers of a LLaMA-style model: per block q, k, v, o, gate, up, down.
 *
 * @param config the model's config.json
 * @returns one shape per linear layer, block by block
 * @throws Error naming the missing key when the config lacks one
 */
export function llamaLinearShapes(config: LlamaShapeConfig): LinearShape[] {
  for (
    const key of ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"]
  ) {
    if (typeof (config as unknown as Record<string, unknown>)[key] !== "number") {
      throw new Error(`model config.json: ${key} missing or not a number`);
    }
  }
  const h = config.hidden_size;
  const heads = config.num_attention_heads;
  const headDim = config.head_dim ?? h / heads;
  const kv = (config.num_key_value_heads ?? heads) * headDim;
  const q = heads * headDim;
  const inter = config.intermediate_size;
  const block: LinearShape[] = [
    { dIn: h, dOut: q },
    { dIn: h, dOut: kv },
    { dIn: h, dOut: kv },
    { dIn: q, dOut: h },
    { dIn: h, dOut: inter },
    { dIn: h, dOut: inter },
    { dIn: inter, dOut: h },
  ];
  return Array.from({ length: config.num_hidden_layers }, () => block).flat();
}

/** A quantization setting as recorded in points: bits (16 = none), group size, rank. */
export interface StorageSetting {
  /** Weight bits; 16 = unquantized. */
  bits: number;
  /** Group size; -1 or null = one group per output row. */
  groupSize: number | null;
  /** Uniform compensation rank per layer. */
  rank: number;
}

/**
 * Bits per weight of the linear layers (see the module documentation for the formula).
 *
 * @param setting bits, group size and uniform rank
 * @param shapes the quantized linear layers
 * @returns bits per weight
 */
export function bitsPerWeight(setting: StorageSetting, shapes: readonly LinearShape[]): number {
  if (setting.bits >= 16) return 16;
  let weights = 0;
  let bits = 0;
  for (const { dIn, dOut } of shapes) {
    const g = setting.groupSize === null || setting.groupSize <= 0
      ? dIn
      : Math.min(setting.groupSize, dIn);
    const rank = Math.min(setting.rank, dIn, dOut);
    weights += dIn * dOut;
    bits += dIn * dOut * setting.bits + dOut * Math.ceil(dIn / g) * 32 +
      rank * (dIn + dOut) * 16;
  }
  return weights === 0 ? NaN : bits / weights;
}

/**
 * The linear shapes of the checkpoint in a folder (its config.json).
 *
 * @param modelDir the checkpoint folder
 * @returns the shapes
 * @throws Error naming the file when it is missing or not a LLaMA-style config
 */
export async function readModelShapes(modelDir: string): Promise<LinearShape[]> {
  const file = `${modelDir.replace(/\/$/, "")}/config.json`;
  let config: LlamaShapeConfig;
  try {
    config = JSON.parse(await Deno.readTextFile(file));
  } catch (error) {
    throw new Error(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  try {
    return llamaLinearShapes(config);
  } catch (error) {
    throw new Error(`${file}: ${(error as Error).message}`, { cause: error });
  }
}
