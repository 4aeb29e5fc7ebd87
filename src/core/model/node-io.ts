/**
 * Node-only file access for the model loader. Imported dynamically (never statically) by the platform-neutral
 * modules, so a browser worker bundle never evaluates node:fs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { escapeRegExp, removeDeadWritersTemps } from '../util/temp-files-node.js';
import type { CacheLike } from './base-cache.js';

/** The size of a regular file at filePath, or null when there is none. */
export function localFileSize(filePath: string): number | null {
  try {
    const stat = fs.statSync(filePath);
    return stat.isFile() ? stat.size : null;
  } catch {
    return null;
  }
}

/**
 * Throws unless `filePath`, a file of the model folder `modelDir`, resolves (through symbolic links) to a place inside
 * that folder: a link in a model folder must not make Steerlab read a file elsewhere (onnxruntime applies the same
 * rule to the external data it reads itself, and refuses even the links of a Hugging Face cache snapshot).
 */
export function checkInsideModelFolder(filePath: string, modelDir: string): void {
  const root = path.resolve(modelDir);
  let real: string;
  let realRoot: string;
  try {
    real = fs.realpathSync(filePath);
    realRoot = fs.realpathSync(root);
  } catch {
    return; // nothing there: the read that follows reports the missing file
  }
  const rel = path.relative(realRoot, real);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new Error(
      `${filePath} resolves to ${real}, outside the model folder ${root}; a model may only read files inside its own folder. ` +
        'Replace the link by the file itself, or load the model from the folder that holds it',
    );
  }
}

/** Reads of 64 MiB: few syscalls, and progress events a UI can show for a multi-GB file. */
const READ_BLOCK = 64 << 20;

/**
 * A whole local file into ONE buffer allocated at its final size: no stream chunks to keep and concatenate (which
 * cost a second full-size copy), and no 2 GiB limit as fs.readFile has (external data files are often larger).
 */
export async function readLocalFile(
  filePath: string,
  progress?: (loaded: number, total: number) => void,
  blockSize = READ_BLOCK,
): Promise<Uint8Array> {
  if (!Number.isInteger(blockSize) || blockSize <= 0) throw new Error(`readLocalFile: blockSize must be a positive integer, got ${blockSize}`);
  const fh = await fs.promises.open(filePath, 'r');
  try {
    const size = (await fh.stat()).size;
    const out = new Uint8Array(size);
    let off = 0;
    while (off < size) {
      const { bytesRead } = await fh.read(out, off, Math.min(blockSize, size - off), off);
      if (bytesRead === 0) throw new Error(`reading ${filePath} was cut short: got ${off} bytes, the file has ${size}`);
      off += bytesRead;
      progress?.(off, size);
    }
    if (size === 0) progress?.(0, 0);
    return out;
  } finally {
    await fh.close();
  }
}

/** A local file as a streaming Response (so progress and size checks work the same as for downloads), or null. */
export function localFileResponse(filePath: string): Response | null {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(filePath);
  } catch {
    return null;
  }
  if (!stat.isFile()) return null;
  const body = Readable.toWeb(fs.createReadStream(filePath)) as unknown as ReadableStream<Uint8Array>;
  return new Response(body, { status: 200, headers: { 'content-length': String(stat.size) } });
}

/**
 * The on-disk layout of transformers.js's FileCache (node): `${cacheDir}/${key}`, where transformers.js uses
 * `{model}/{file}` for the main revision. A custom cache receives remote URLs as keys instead, so URLs of the
 * default hub layout are mapped back to that relative key; other keys (local paths) are never cached.
 */
export class NodeFileCache implements CacheLike {
  constructor(readonly dir: string, private readonly keyOf: (key: string) => string | null) {}

  async match(key: string): Promise<Response | undefined> {
    const file = this.filePathFor(key);
    return file === null ? undefined : (localFileResponse(file) ?? undefined);
  }

  /** Where the cached file for `key` lies on disk, or null when it is not cached (lets ORT read it by path). */
  filePathFor(key: string): string | null {
    const rel = this.keyOf(key);
    if (rel === null) return null;
    const file = path.join(this.dir, rel);
    return localFileSize(file) === null ? null : file;
  }

  async put(key: string, response: Response): Promise<void> {
    const rel = this.keyOf(key);
    if (rel === null || !response.body) return;
    const filePath = path.join(this.dir, rel);
    await fs.promises.mkdir(path.dirname(filePath), { recursive: true });
    // Temp files of downloads killed mid-write (their pid is in the name) go first.
    removeDeadWritersTemps(path.dirname(filePath), new RegExp(`^${escapeRegExp(path.basename(filePath))}\\.tmp\\.(\\d+)\\.[0-9a-z]+$`));
    // Atomic: a temp file in the same folder, renamed once complete, so readers never see half a file.
    const tmp = `${filePath}.tmp.${process.pid}.${Math.random().toString(36).slice(2)}`;
    try {
      const out = fs.createWriteStream(tmp);
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        await new Promise<void>((resolve, reject) => out.write(value, (e) => (e ? reject(e) : resolve())));
      }
      await new Promise<void>((resolve, reject) => out.close((e) => (e ? reject(e) : resolve())));
      const expected = response.headers.get('content-length');
      if (expected !== null && fs.statSync(tmp).size !== Number(expected)) {
        throw new Error(`cache write of ${rel}: got ${fs.statSync(tmp).size} bytes, expected ${expected}`);
      }
      await fs.promises.rename(tmp, filePath);
    } catch (e) {
      await fs.promises.unlink(tmp).catch(() => {});
      throw e;
    }
  }
}

export function isNodeDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** The absolute path of `p` when it names an existing folder (relative to the working directory), else null. */
export function absoluteFolder(p: string): string | null {
  return isNodeDirectory(p) ? path.resolve(p) : null;
}

/**
 * Reads files of a model folder on disk by their path inside it (model-id.ts ModelFileReader): sizes from stat,
 * byte ranges by positioned reads, so a sampled multi-GB file is never read whole.
 */
export function folderFileReader(dir: string): { size(file: string): Promise<number | null>; read(file: string, start: number, end: number): Promise<Uint8Array> } {
  const full = (f: string) => {
    if (path.isAbsolute(f) || f.split(/[\\/]/).includes('..')) throw new Error(`model file ${JSON.stringify(f)} is outside the folder ${dir}`);
    return path.join(dir, f);
  };
  return {
    size: async (f) => localFileSize(full(f)),
    read: async (f, start, end) => {
      const fh = await fs.promises.open(full(f), 'r');
      try {
        const out = new Uint8Array(end - start);
        let off = 0;
        while (off < out.byteLength) {
          const { bytesRead } = await fh.read(out, off, out.byteLength - off, start + off);
          if (bytesRead === 0) throw new Error(`${full(f)}: the file ended at ${start + off}, expected bytes up to ${end}`);
          off += bytesRead;
        }
        return out;
      } finally {
        await fh.close();
      }
    },
  };
}
