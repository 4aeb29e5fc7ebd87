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
 * - A Response built from bytes copies them (fetch's body extraction), and transformers.js asks up to three times per
 *   file, so each answer is a BytesResponse: arrayBuffer() hands out the registered bytes themselves and the body
 *   stream is one chunk over them. The bytes are never written to, by us, transformers.js or onnxruntime.
 */
import { env } from '@huggingface/transformers';
import { buildResourcePaths } from './hub-paths.js';
import { getBaseCache, setPreviousCustomCache, type CacheLike } from './base-cache.js';

interface Entry {
  requestURL: string;
  remoteURL: string;
  bytes: Uint8Array;
}

/** A whole ArrayBuffer holding exactly these bytes: the bytes' own buffer when they span it, else a copy. */
function wholeBuffer(bytes: Uint8Array): ArrayBuffer {
  const b = bytes.buffer as ArrayBuffer;
  return bytes.byteOffset === 0 && bytes.byteLength === b.byteLength ? b : (b.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
}

/**
 * A 200 Response over registered bytes that never copies them: transformers.js reads it with arrayBuffer() (no
 * progress callback) or through body (progress callback), and tests it with instanceof Response, status and the
 * content-length header, all of which this keeps.
 */
class BytesResponse extends Response {
  constructor(private readonly held: Uint8Array) {
    super(null, { status: 200, headers: { 'content-length': String(held.byteLength), 'content-type': 'application/octet-stream' } });
  }
  override get body(): Response['body'] {
    const bytes = this.held;
    return new ReadableStream<Uint8Array>({
      start(c) {
        if (bytes.byteLength > 0) c.enqueue(bytes);
        c.close();
      },
    }) as Response['body'];
  }
  override get bodyUsed(): boolean {
    return false;
  }
  override async arrayBuffer(): Promise<ArrayBuffer> {
    return wholeBuffer(this.held);
  }
  override async bytes(): ReturnType<Response['bytes']> {
    return new Uint8Array(wholeBuffer(this.held)) as Awaited<ReturnType<Response['bytes']>>;
  }
  override async blob(): Promise<Blob> {
    return new Blob([this.held as unknown as BlobPart], { type: 'application/octet-stream' });
  }
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
    if (e) return new BytesResponse(e.bytes);
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
