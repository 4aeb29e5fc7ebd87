/**
 * Node-only file helpers for controllers (kept out of index.ts so the rest of the module bundles for a browser
 * worker). Writes are atomic: a temp file in the same folder, then rename, so a crash never leaves half a file.
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../util/atomic-write.js';
import { decodeController, encodeController, type DecodeControllerOptions } from './format.js';
import type { Controller } from './metadata.js';

export { writeFileAtomic };

export async function saveControllerFile(file: string, controller: Controller): Promise<void> {
  await writeFileAtomic(file, encodeController(controller));
}

export async function loadControllerFile(file: string, options: Omit<DecodeControllerOptions, 'source'> = {}): Promise<Controller> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new Error(`cannot read controller file ${file}: ${(e as Error).message}`);
  }
  return decodeController(bytes, { ...options, source: file });
}
