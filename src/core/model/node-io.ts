/**
 * Node-only file access for the model loader. Imported dynamically (never statically) by the platform-neutral
 * modules, so a browser worker bundle never evaluates node:fs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { CacheLike } from './base-cache.js';

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
    const rel = this.keyOf(key);
    if (rel === null) return undefined;
    return localFileResponse(path.join(this.dir, rel)) ?? undefined;
  }

  async put(key: string, response: Response): Promise<void> {
    const rel = this.keyOf(key);
    if (rel === null || !response.body) return;
    const filePath = path.join(this.dir, rel);
    await fs.promises.mkdir(path.dirname(filePath), { recursive: true });
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
