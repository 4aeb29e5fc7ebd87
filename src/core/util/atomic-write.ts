/**
 * The one atomic file writer of the project (Node only). Bytes go to a temp file in the target's folder, are
 * fsynced, then renamed over the target (atomic within one filesystem), and the folder is fsynced so the rename
 * itself survives a crash: a reader sees the old file or the new one, never half of one, and a failed write leaves
 * the old file untouched and no temp file behind.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Node's write caps one call at 2 GiB: multi-GB external data files are written in chunks. */
const CHUNK = 1 << 30;

/** data: bytes, text (UTF-8), or a list of byte chunks written in order (a large file never concatenated). */
export async function writeFileAtomic(path: string, data: Uint8Array | string | readonly Uint8Array[]): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
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
    throw err;
  }
  await fsyncDir(dirname(path));
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
