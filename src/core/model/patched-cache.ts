/**
 * Hands patched ONNX bytes to transformers.js. transformers.js resolves every file cache first (src/utils/hub.js
 * loadResourceFile), so a custom cache (env.useCustomCache / env.customCache) that answers for the patched file
 * names makes from_pretrained build its session from our bytes, while every other file goes to the cache
 * transformers.js would have used anyway (base-cache.ts).
 *
 * Rules learned from the transformers.js source:
 * - match() is called with the local path first, then with the hub URL; in Node it is called a second time to read
 *   the body (return_path mode), so every call must return a NEW Response (a body can be read once).
 * - The patched files carry distinct names (model_file_name 'model_steerable' ...) so they never collide with, or get
 *   stored over, the original files.
 * - Entries are held only while a session is being created, then dropped (they are as large as the model).
 */
import { env } from '@huggingface/transformers';
import { buildResourcePaths } from './hub-paths.js';
import { getBaseCache, setPreviousCustomCache, type CacheLike } from './base-cache.js';

interface Entry {
  requestURL: string;
  remoteURL: string;
  bytes: Uint8Array;
}

function endsWithPath(key: string, suffix: string): boolean {
  if (key === suffix) return true;
  return key.endsWith(suffix) && (suffix.startsWith('/') || key[key.length - suffix.length - 1] === '/');
}

export class SteerlabCache implements CacheLike {
  private entries: Entry[] = [];

  /** Serve `bytes` for `filename` (path inside the model folder) of `idOrPath` until the returned function is called. */
  register(idOrPath: string, filename: string, bytes: Uint8Array): () => void {
    const { requestURL, remoteURL } = buildResourcePaths(idOrPath, filename);
    const entry: Entry = { requestURL, remoteURL, bytes };
    this.entries.push(entry);
    return () => {
      this.entries = this.entries.filter((e) => e !== entry);
    };
  }

  private find(key: string): Entry | undefined {
    if (typeof key !== 'string') return undefined;
    return this.entries.find((e) => key === e.remoteURL || endsWithPath(key, e.requestURL));
  }

  async match(key: string): Promise<unknown> {
    const e = this.find(key);
    if (e) {
      return new Response(e.bytes as unknown as BodyInit, {
        status: 200,
        headers: { 'content-length': String(e.bytes.byteLength), 'content-type': 'application/octet-stream' },
      });
    }
    const base = await getBaseCache();
    return base ? await base.match(key) : undefined;
  }

  async put(key: string, response: Response, progress?: (p: { progress: number; loaded: number; total: number }) => void): Promise<void> {
    if (this.find(key)) return; // patched bytes are never persisted
    const base = await getBaseCache();
    if (base) await base.put(key, response, progress);
  }
}

let installed: SteerlabCache | null = null;

/**
 * Make transformers.js resolve through SteerlabCache (idempotent). A custom cache that was set before is kept as
 * the fallback. Note: with any custom cache active transformers.js skips its built-in caches, which is why the
 * fallback re-creates them (base-cache.ts).
 */
export function installSteerlabCache(): SteerlabCache {
  if (installed && env.customCache === (installed as unknown) && env.useCustomCache) return installed;
  if (!installed) installed = new SteerlabCache();
  if (env.useCustomCache && env.customCache && env.customCache !== (installed as unknown)) {
    setPreviousCustomCache(env.customCache as unknown as CacheLike);
  }
  (env as { customCache: unknown }).customCache = installed;
  env.useCustomCache = true;
  return installed;
}
