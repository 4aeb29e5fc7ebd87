/**
 * Node side of the loader: reads the same files the browser fetches, from public/data on disk.
 * Not imported by browser code (src/core/data/index.ts leaves it out).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDataset, parseUserFile, resolveDataset, type UserFileOptions } from './load.js';
import { DatasetError, type LoadResult } from './types.js';
import { decodeUtf8 } from '../util/utf8.js';

/** public/data of this checkout, found from this file's location (src/core/data -> ../../../public/data). */
export const DEFAULT_DATA_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../public/data');

export interface NodeLoadOptions {
  /** Folder holding the dataset files (default: the project's public/data). */
  dataDir?: string;
}

async function readText(file: string, what: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new DatasetError(`${what}: cannot read ${file} (${code ?? (err as Error).message})`);
  }
  try {
    return decodeUtf8(bytes, file);
  } catch (err) {
    throw new DatasetError((err as Error).message);
  }
}

/** Path of a named dataset's (or view's base) file. */
export function datasetPath(name: string, options: NodeLoadOptions = {}): string {
  return path.join(options.dataDir ?? DEFAULT_DATA_DIR, resolveDataset(name).entry.file);
}

export async function loadDataset(name: string, options: NodeLoadOptions = {}): Promise<LoadResult> {
  const file = datasetPath(name, options);
  return parseDataset(name, await readText(file, name));
}

export async function loadUserFile(file: string, options: UserFileOptions): Promise<LoadResult> {
  return parseUserFile(await readText(file, 'user file'), path.basename(file), { source: file, ...options });
}
