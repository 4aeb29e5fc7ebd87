/**
 * Reads one model file in transformers.js's order (cache -> local -> remote; src/utils/hub.js loadResourceFile) and
 * with its settings (env.allowLocalModels, env.localModelPath, env.allowRemoteModels, env.remoteHost,
 * env.remotePathTemplate, env.fetch, the same cache and cache keys). Used for the original ONNX graph and its
 * external data, which Steerlab must patch before transformers.js sees them; every other file is loaded by
 * transformers.js itself. Unlike transformers.js it rejects a download whose length differs from Content-Length.
 */
import { env } from '@huggingface/transformers';
import { buildResourcePaths, isHttpUrl } from './hub-paths.js';
import { getBaseCache, IS_NODE, loadNodeIo, type CacheLike } from './base-cache.js';

export class ModelFileNotFoundError extends Error {
  readonly code = 'MODEL_FILE_NOT_FOUND';
  constructor(message: string) {
    super(message);
    this.name = 'ModelFileNotFoundError';
  }
}

export type ByteProgress = (loaded: number, total: number | null, fromCache: boolean) => void;

async function readAll(res: Response, what: string, progress: ByteProgress | undefined, fromCache: boolean): Promise<Uint8Array> {
  const header = res.headers.get('content-length');
  const total = header !== null && /^\d+$/.test(header) ? Number(header) : null;
  if (!res.body) {
    const buf = new Uint8Array(await res.arrayBuffer());
    progress?.(buf.byteLength, total ?? buf.byteLength, fromCache);
    return buf;
  }
  // With a known length every chunk is copied straight into the final buffer, so a multi-GB file never exists twice
  // (chunk list + concatenation) in memory; without one the chunks are kept and joined at the end.
  const out = total !== null ? new Uint8Array(total) : null;
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (out) {
        if (loaded + value.byteLength > out.byteLength) {
          throw new Error(`got more than the ${total} bytes Content-Length announced`);
        }
        out.set(value, loaded);
      } else {
        chunks.push(value);
      }
      loaded += value.byteLength;
      progress?.(loaded, total, fromCache);
    }
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw new Error(`reading ${what} failed after ${loaded}${total !== null ? ` of ${total}` : ''} bytes: ${(e as Error).message}`);
  }
  if (total !== null && loaded !== total) {
    throw new Error(`reading ${what} was cut short: got ${loaded} bytes, Content-Length says ${total}`);
  }
  if (out) return out;
  if (chunks.length === 1) return chunks[0]!;
  const joined = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) {
    joined.set(c, off);
    off += c.byteLength;
  }
  return joined;
}

/** Node: a file on disk in one read into one buffer (node-io.ts readLocalFile), with the same progress events. */
async function readNodeFile(filePath: string, progress: ByteProgress | undefined, fromCache: boolean): Promise<Uint8Array> {
  const { readLocalFile } = await loadNodeIo();
  return readLocalFile(filePath, progress && ((loaded, total) => progress(loaded, total, fromCache)));
}

/** Node: a file of a local model folder must resolve inside that folder (node-io.ts checkInsideModelFolder). */
async function confine(localPath: string, filename: string): Promise<void> {
  if (!localPath.endsWith(filename)) return;
  const { checkInsideModelFolder } = await loadNodeIo();
  checkInsideModelFolder(localPath, localPath.slice(0, localPath.length - filename.length) || '.');
}

/** A cache answer can be a Response, transformers.js's FileResponse (node), or a file path string. */
async function fromCacheAnswer(ans: unknown, what: string, progress: ByteProgress | undefined): Promise<Uint8Array | null> {
  if (ans === undefined || ans === null) return null;
  if (typeof ans === 'string') {
    if (!IS_NODE) return null;
    const { localFileSize } = await loadNodeIo();
    return localFileSize(ans) === null ? null : readNodeFile(ans, progress, true);
  }
  if (typeof Response !== 'undefined' && ans instanceof Response) return readAll(ans, what, progress, true);
  const like = ans as { arrayBuffer?: () => Promise<ArrayBuffer>; status?: number };
  if (typeof like.arrayBuffer === 'function' && (like.status === undefined || like.status === 200)) {
    const buf = new Uint8Array(await like.arrayBuffer());
    progress?.(buf.byteLength, buf.byteLength, true);
    return buf;
  }
  return null;
}

/** Node's file cache (node-io.ts NodeFileCache) knows where an entry lies on disk; other caches do not. */
function cachedFilePath(cache: CacheLike, key: string): string | null {
  const c = cache as CacheLike & { filePathFor?: (key: string) => string | null };
  return typeof c.filePathFor === 'function' ? c.filePathFor(key) : null;
}

/**
 * Node only: the path of the file that fetchModelFile would read for `filename`, when that file is on local disk
 * (the file cache, a custom cache answering with a path, or the local model folder), so that onnxruntime can read it
 * itself instead of from a copy in memory. null when it would come from memory or the network (then call
 * fetchModelFile), and always null in a browser.
 */
export async function locateModelFile(idOrPath: string, filename: string, opts: { revision?: string } = {}): Promise<string | null> {
  if (!IS_NODE) return null;
  const { requestURL, localPath, remoteURL } = buildResourcePaths(idOrPath, filename, opts.revision);
  const { localFileSize } = await loadNodeIo();
  const cache = await getBaseCache();
  if (cache) {
    for (const key of [localPath, remoteURL]) {
      const onDisk = cachedFilePath(cache, key);
      if (onDisk !== null) return onDisk;
      let ans: unknown;
      try {
        ans = await cache.match(key);
      } catch {
        continue;
      }
      if (ans === undefined || ans === null) continue;
      // transformers.js accepts a path string or its FileResponse (which carries filePath) from a custom cache.
      const p = typeof ans === 'string' ? ans : (ans as { filePath?: unknown }).filePath;
      if (typeof p === 'string' && localFileSize(p) !== null) return p;
      const body = (ans as { body?: { cancel?: () => Promise<void> } | null }).body;
      if (body && typeof body.cancel === 'function') await body.cancel().catch(() => {});
      return null; // the cache holds it, but only as bytes
    }
  }
  if (env.allowLocalModels && env.useFS && !isHttpUrl(requestURL) && localFileSize(localPath) !== null) {
    await confine(localPath, filename);
    return localPath;
  }
  return null;
}

export async function fetchModelFile(
  idOrPath: string,
  filename: string,
  opts: { progress?: ByteProgress; revision?: string } = {},
): Promise<Uint8Array> {
  const { requestURL, localPath, remoteURL, validModelId } = buildResourcePaths(idOrPath, filename, opts.revision);
  const progress = opts.progress;

  // 1. cache (transformers.js tries the local path as a key first, then the hub URL)
  const cache = await getBaseCache();
  if (cache) {
    for (const key of [localPath, remoteURL]) {
      const onDisk = cachedFilePath(cache, key);
      if (onDisk !== null) return readNodeFile(onDisk, progress, true);
      let ans: unknown;
      try {
        ans = await cache.match(key);
      } catch {
        continue;
      }
      const bytes = await fromCacheAnswer(ans, `cached ${filename}`, progress);
      if (bytes) return bytes;
    }
  }

  // 2. local files
  if (env.allowLocalModels && !isHttpUrl(requestURL)) {
    let res: Response | null = null;
    if (IS_NODE && env.useFS) {
      const { localFileSize } = await loadNodeIo();
      if (localFileSize(localPath) !== null) {
        await confine(localPath, filename);
        return readNodeFile(localPath, progress, false);
      }
    } else {
      try {
        const r = (await env.fetch(localPath)) as Response;
        if (r.status === 200) res = r;
      } catch {
        res = null;
      }
    }
    if (res) return readAll(res, localPath, progress, false);
  }

  // 3. the hub
  if (!env.allowRemoteModels) {
    throw new ModelFileNotFoundError(`model file "${filename}" was not found locally at "${localPath}" and remote models are disabled (env.allowRemoteModels=false)`);
  }
  if (!validModelId) {
    throw new ModelFileNotFoundError(
      `model file "${filename}" was not found at "${localPath}", and "${idOrPath}" is not a hub id (expected a folder holding ${filename}, or "org/name")`,
    );
  }
  let res: Response;
  try {
    res = (await env.fetch(remoteURL)) as Response;
  } catch (e) {
    throw new Error(`could not download ${remoteURL}: ${(e as Error).message}`);
  }
  if (res.status !== 200) {
    const missing = res.status === 404 || res.status === 401 || res.status === 403;
    const msg = `${missing ? 'no such file on the hub' : 'hub request failed'}: ${remoteURL} (HTTP ${res.status}); is "${idOrPath}" a model with ${filename}?`;
    throw missing ? new ModelFileNotFoundError(msg) : new Error(msg);
  }
  const bytes = await readAll(res, remoteURL, progress, false);
  if (cache) {
    try {
      await cache.put(remoteURL, new Response(bytes as unknown as BodyInit, { headers: { 'content-length': String(bytes.byteLength) } }));
    } catch {
      // Like transformers.js: a full or unavailable cache must not fail the load.
    }
  }
  return bytes;
}
