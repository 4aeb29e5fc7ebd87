/**
 * Node helpers for direction files: read (with the model fit check), write atomically, import a user's file.
 * Atomic write: the bytes go to a temporary file in the same folder, which is then renamed over the target, so a
 * crash never leaves a half-written direction behind (rename within one filesystem is atomic on POSIX).
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { decodeDirectionFile, encodeDirectionFile, type DirectionFile, type ModelShape } from './direction-file.js';
import { importDirection, type ImportOptions } from './direction-import.js';

/** Write bytes to `path` atomically (temp file in the same folder, fsync, rename). */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

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
