/**
 * Node helpers for direction files: read (with the model fit check), write atomically, import a user's file.
 * Atomic write: the bytes go to a temporary file in the same folder, which is then renamed over the target, so a
 * crash never leaves a half-written direction behind (rename within one filesystem is atomic on POSIX).
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../util/atomic-write.js';
import { decodeDirectionFile, encodeDirectionFile, type DirectionFile, type ModelShape } from './direction-file.js';
import { importDirection, type ImportOptions } from './direction-import.js';

export { writeFileAtomic };

export async function writeDirectionFile(path: string, file: DirectionFile): Promise<void> {
  await writeFileAtomic(path, encodeDirectionFile(file));
}

/** Read a direction file; with `model`, a hidden size or layer count that does not match is an error. */
export async function readDirectionFile(path: string, model?: ModelShape): Promise<DirectionFile> {
  const bytes = await readFile(path);
  return decodeDirectionFile(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), model, path);
}

/** Import a user's safetensors / JSON / .npy vector from disk (see importDirection). */
export async function importDirectionFile(path: string, options: ImportOptions): Promise<DirectionFile> {
  const bytes = await readFile(path);
  return importDirection(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), path, options);
}
