/**
 * The cache transformers.js would use if Steerlab had not installed its own custom cache (transformers.js 4.3.1,
 * src/utils/cache.js getCache): a custom cache someone set before us, else the browser Cache API under env.cacheKey,
 * else (node) a file cache under env.cacheDir with FileCache's layout. Resolved on every call because tests and
 * apps change env.cacheDir / env.useFSCache after import.
 */
import { env } from '@huggingface/transformers';
import { pathJoin } from './hub-paths.js';

/** The subset of the Web Cache API that transformers.js calls. */
export interface CacheLike {
  match(key: string): Promise<unknown>;
  put(key: string, response: Response, progress?: (p: { progress: number; loaded: number; total: number }) => void): Promise<void>;
}

export const IS_NODE = typeof process !== 'undefined' && (process as { release?: { name?: string } }).release?.name === 'node';

/**
 * Node-only file access, loaded on demand. The specifier is a variable so that browser bundlers (Vite, esbuild) do
 * not follow it into node:fs; it only ever runs where IS_NODE holds.
 */
const NODE_IO = './node-io.js';
export async function loadNodeIo(): Promise<typeof import('./node-io.js')> {
  if (!IS_NODE) throw new Error('node-io is only available in Node');
  return (await import(/* @vite-ignore */ NODE_IO)) as typeof import('./node-io.js');
}

let previousCustomCache: CacheLike | null = null;

/** Remember a custom cache that was active before ours so that ours can delegate to it. */
export function setPreviousCustomCache(c: CacheLike | null): void {
  previousCustomCache = c;
}

/** Maps a hub URL of the default layout back to FileCache's relative key ('{model}/{file}'), else null. */
export function hubUrlToCacheKey(key: string): string | null {
  const template = env.remotePathTemplate;
  const prefix = pathJoin(env.remoteHost, '');
  if (!key.startsWith(prefix)) return null;
  const rest = key.slice(prefix.length).replace(/^\//, '');
  const esc = template.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp('^' + esc.replace('\\{model\\}', '(.+?)').replace('\\{revision\\}', '([^/]+)') + '(.+)$');
  const m = re.exec(rest);
  if (!m) return null;
  const hasRevision = template.includes('{revision}');
  const model = m[1]!;
  const revision = hasRevision ? decodeURIComponent(m[2]!) : 'main';
  const file = hasRevision ? m[3]! : m[2]!;
  if (model.includes('..') || file.includes('..')) return null;
  return revision === 'main' ? pathJoin(model, file) : pathJoin(model, revision, file);
}

export async function getBaseCache(): Promise<CacheLike | null> {
  if (previousCustomCache) return previousCustomCache;
  if (env.useBrowserCache && typeof caches !== 'undefined') {
    try {
      return (await caches.open(env.cacheKey)) as unknown as CacheLike;
    } catch {
      // Same as transformers.js: an inaccessible Cache API (e.g. private mode) means no cache, not a failure.
    }
  }
  if (IS_NODE && env.useFSCache && env.cacheDir) {
    const { NodeFileCache } = await loadNodeIo();
    return new NodeFileCache(env.cacheDir, hubUrlToCacheKey);
  }
  return null;
}
