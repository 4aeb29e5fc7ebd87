/**
 * The one atomic file writer of the project (Node only). Bytes go to a temp file in the target's folder, are
 * fsynced, then renamed over the target (atomic within one filesystem), and the folder is fsynced so the rename
 * itself survives a crash: a reader sees the old file or the new one, never half of one, and a failed write leaves
 * the old file untouched and no temp file behind. Temp files of killed writers (`.NAME.tmp-PID-XXXXXXXX`) are
 * removed by the next write of the same file. Errors name the file the user asked for, never the temp file, and
 * say what to do.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { escapeRegExp, removeDeadWritersTemps } from './temp-files-node.js';

/** Node's write caps one call at 2 GiB: multi-GB external data files are written in chunks. */
const CHUNK = 1 << 30;

/** What went wrong writing `path`, in words, and what to do. */
export function describeWriteError(path: string, err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const dir = dirname(path);
  switch (e.code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return `cannot write ${path}: the disk is full${e.code === 'EDQUOT' ? ' (quota)' : ''}; free space on the disk holding ${dir} and run the command again`;
    case 'EACCES':
    case 'EPERM':
      return `cannot write ${path}: no permission to write in ${dir}; choose a folder you can write to`;
    case 'ENOENT':
      return `cannot write ${path}: the folder ${dir} does not exist; create it first`;
    case 'ENOTDIR':
      return `cannot write ${path}: part of the path ${dir} is a file, not a folder`;
    case 'EISDIR':
      return `cannot write ${path}: it is a folder; give a file name`;
    case 'EROFS':
      return `cannot write ${path}: the file system is read-only; choose another place`;
    default:
      return `cannot write ${path}: ${e.code ?? (err as Error).message}`;
  }
}

/** data: bytes, text (UTF-8), or a list of byte chunks written in order (a large file never concatenated). */
export async function writeFileAtomic(path: string, data: Uint8Array | string | readonly Uint8Array[]): Promise<void> {
  const dir = dirname(path);
  const name = basename(path);
  removeDeadWritersTemps(dir, new RegExp(`^\\.${escapeRegExp(name)}\\.tmp-(\\d+)-[0-9a-f]{8}$`));
  const tmp = join(dir, `.${name}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  try {
    const fh = await open(tmp, 'wx');
    try {
      for (const bytes of chunks) {
        for (let off = 0; off < bytes.byteLength; ) {
          const { bytesWritten } = await fh.write(bytes, off, Math.min(bytes.byteLength - off, CHUNK));
          off += bytesWritten;
        }
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw Object.assign(new Error(describeWriteError(path, err)), { code: (err as NodeJS.ErrnoException).code });
  }
  await fsyncDir(dir);
}

async function fsyncDir(dir: string): Promise<void> {
  // Some filesystems refuse to open or sync a directory; the data itself is already durable then.
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    /* best effort */
  }
}
