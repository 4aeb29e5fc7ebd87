/**
 * Node-only file helpers for controllers (kept out of index.ts so the rest of the module bundles for a browser
 * worker). Writes are atomic: a temp file in the same folder, then rename, so a crash never leaves half a file.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { decodeController, encodeController, type DecodeControllerOptions } from './format.js';
import type { Controller } from './metadata.js';

export async function writeFileAtomic(file: string, bytes: Uint8Array): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, bytes, { flag: 'wx' });
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

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
