/**
 * Reads one model file in transformers.js's order (cache -> local -> remote; src/utils/hub.js loadResourceFile) and
 * with its settings (env.allowLocalModels, env.localModelPath, env.allowRemoteModels, env.remoteHost,
 * env.remotePathTemplate, env.fetch, the same cache and cache keys). Used for the original ONNX graph and its
 * external data, which Steerlab must patch before transformers.js sees them; every other file is loaded by
 * transformers.js itself. Unlike transformers.js it rejects a download whose length differs from Content-Length.
 */
import { env } from '@huggingface/transformers';
import { buildResourcePaths, isHttpUrl } from './hub-paths.js';
import { getBaseCache, IS_NODE, loadNodeIo } from './base-cache.js';

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
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      loaded += value.byteLength;
      progress?.(loaded, total, fromCache);
    }
  } catch (e) {
    throw new Error(`reading ${what} failed after ${loaded}${total !== null ? ` of ${total}` : ''} bytes: ${(e as Error).message}`);
  }
  if (total !== null && loaded !== total) {
    throw new Error(`reading ${what} was cut short: got ${loaded} bytes, Content-Length says ${total}`);
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

/** A cache answer can be a Response, transformers.js's FileResponse (node), or a file path string. */
async function fromCacheAnswer(ans: unknown, what: string, progress: ByteProgress | undefined): Promise<Uint8Array | null> {
  if (ans === undefined || ans === null) return null;
  if (typeof ans === 'string') {
    if (!IS_NODE) return null;
    const { localFileResponse } = await loadNodeIo();
    const r = localFileResponse(ans);
    return r ? readAll(r, what, progress, true) : null;
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
      const { localFileResponse } = await loadNodeIo();
      res = localFileResponse(localPath);
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
