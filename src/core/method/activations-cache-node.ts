/**
 * The CLI's activation cache (Node): train-controller reuses cached controller inputs across runs when the model,
 * the input layers and the prompts are the same (a small safetensors file, keyed by a digest of all three).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { decodeSafetensors, encodeSafetensors } from '../steering/safetensors.js';
import { writeFileAtomic } from '../steering/direction-file-node.js';

export interface ActivationCacheKey {
  modelId: string;
  inputLayers: readonly number[];
  hiddenSize: number;
  /** The prompts, in row order (their texts are hashed: a changed set misses the cache). */
  prompts: readonly string[];
}

export function activationCacheDigest(key: ActivationCacheKey): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ m: key.modelId, l: key.inputLayers, h: key.hiddenSize, template: 'chat+generation-prompt/last-token' }));
  for (const p of key.prompts) h.update(`\u0000${p}`);
  return h.digest('hex');
}

/** Cached rows for exactly this key, or null (missing file or another key). A corrupt file is an error. */
export async function readActivationCache(file: string, key: ActivationCacheKey): Promise<Float32Array | null> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(file));
  } catch {
    return null;
  }
  const { tensors, metadata } = decodeSafetensors(bytes, { source: file });
  if (metadata.format !== 'steerlab-activations') throw new Error(`${file} is not a Steerlab activation cache (format ${JSON.stringify(metadata.format)})`);
  if (metadata.digest !== activationCacheDigest(key)) return null;
  const x = tensors.x;
  const width = key.inputLayers.length * key.hiddenSize;
  if (!x || x.data.length !== key.prompts.length * width) throw new Error(`${file}: tensor "x" does not hold ${key.prompts.length} rows of ${width} values`);
  return x.data;
}

export async function writeActivationCache(file: string, key: ActivationCacheKey, x: Float32Array): Promise<void> {
  const width = key.inputLayers.length * key.hiddenSize;
  const bytes = encodeSafetensors(
    { x: { dtype: 'F32', shape: [key.prompts.length, width], data: x } },
    { format: 'steerlab-activations', digest: activationCacheDigest(key), model_id: key.modelId, input_layers: JSON.stringify(key.inputLayers) },
  );
  await writeFileAtomic(file, bytes);
}
