/**
 * Where a model's files come from, for its identity (model-id.ts): a local folder (named by content) or the hub
 * (named by hub id). Follows transformers.js's local lookup (hub-paths.ts buildResourcePaths): with
 * env.allowLocalModels, a folder at the local path, in Node on disk, in a browser served over HTTP under
 * env.localModelPath (how the lab serves its embedded models), holding a config.json.
 */
import { env } from '@huggingface/transformers';
import { IS_NODE, loadNodeIo } from './base-cache.js';
import { buildResourcePaths, isHttpUrl } from './hub-paths.js';
import { fetchFileReader, type ModelSource } from './model-content-id.js';

/** The last path segment: a folder's display name. */
function folderName(p: string): string {
  const parts = p.split(/[\\/]/).filter((s) => s !== '');
  return parts[parts.length - 1] ?? p;
}

export async function modelSourceOf(idOrPath: string): Promise<ModelSource> {
  const { localPath, requestURL } = buildResourcePaths(idOrPath, '');
  if (env.allowLocalModels && !isHttpUrl(requestURL)) {
    if (IS_NODE && env.useFS) {
      const io = await loadNodeIo();
      if (io.isNodeDirectory(localPath) && io.localFileSize(`${localPath.replace(/\/$/, '')}/config.json`) !== null) {
        return { kind: 'folder', name: folderName(idOrPath), files: io.folderFileReader(localPath) };
      }
    } else if (!IS_NODE) {
      const files = fetchFileReader(localPath, (input, init) => env.fetch(input as string, init) as Promise<Response>);
      let size: number | null = null;
      try {
        size = await files.size('config.json');
      } catch {
        size = null; // not served here: the hub
      }
      if (size !== null) return { kind: 'folder', name: folderName(idOrPath), files };
    }
  }
  return { kind: 'hub', id: idOrPath };
}
