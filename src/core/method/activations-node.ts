/** Node: the activation cache (activations.ts) as a file, written atomically. */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../util/atomic-write.js';
import { decodeActivationCache, encodeActivationCache, type ActivationCacheKey } from './activations.js';

/** Cached rows for exactly this key, or null (missing file, or made for another key). A corrupt file is an error. */
export async function readActivationCache(file: string, key: ActivationCacheKey): Promise<Float32Array | null> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(file));
  } catch {
    return null;
  }
  return decodeActivationCache(bytes, key, file);
}

export async function writeActivationCache(file: string, key: ActivationCacheKey, x: Float32Array): Promise<void> {
  await writeFileAtomic(file, await encodeActivationCache(key, x));
}
