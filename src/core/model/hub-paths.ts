/**
 * Where transformers.js (4.3.1, src/utils/hub.js buildResourcePaths) looks for a file, reproduced so that Steerlab
 * reads the original ONNX bytes from exactly the places, and under exactly the cache keys, that transformers.js
 * itself uses for every other file. transformers.js does not export its getModelFile, hence this copy of the rules.
 */
import { env } from '@huggingface/transformers';

/** transformers.js pathJoin: strips the leading '/' of later parts and the trailing '/' of earlier ones. */
export function pathJoin(...parts: string[]): string {
  return parts
    .map((part, i) => {
      let p = part;
      if (i) p = p.replace(/^\//, '');
      if (i !== parts.length - 1) p = p.replace(/\/$/, '');
      return p;
    })
    .join('/');
}

const REPO_ID_REGEX = /^(\b[\w\-.]+\b\/)?\b[\w\-.]{1,96}\b$/;

/** transformers.js isValidHfModelId. */
export function isValidHfModelId(s: string): boolean {
  if (!REPO_ID_REGEX.test(s)) return false;
  if (s.includes('..') || s.includes('--')) return false;
  if (s.endsWith('.git') || s.endsWith('.ipynb')) return false;
  return true;
}

export function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

export interface ResourcePaths {
  /** idOrPath joined with the file: the suffix every lookup key of this file ends with (except remote URLs). */
  requestURL: string;
  /** Where the local lookup reads (env.localModelPath prefix for hub ids). */
  localPath: string;
  /** The hub URL (env.remoteHost + env.remotePathTemplate). */
  remoteURL: string;
  validModelId: boolean;
}

export function buildResourcePaths(idOrPath: string, filename: string, revision = 'main'): ResourcePaths {
  const requestURL = pathJoin(idOrPath, filename);
  const validModelId = isValidHfModelId(idOrPath);
  const localPath = validModelId ? pathJoin(env.localModelPath, requestURL) : requestURL;
  const remoteURL = pathJoin(
    env.remoteHost,
    env.remotePathTemplate.replaceAll('{model}', idOrPath).replaceAll('{revision}', encodeURIComponent(revision)),
    filename,
  );
  return { requestURL, localPath, remoteURL, validModelId };
}

/** transformers.js DEFAULT_DTYPE_SUFFIX_MAPPING: the file-name suffix each dtype selects. */
export const DTYPE_SUFFIX: Record<string, string> = {
  fp32: '',
  fp16: '_fp16',
  int8: '_int8',
  uint8: '_uint8',
  q8: '_quantized',
  q4: '_q4',
  q4f16: '_q4f16',
  bnb4: '_bnb4',
};

/** transformers.js getExternalDataChunkNames: 'x.onnx_data', 'x.onnx_data_1', ... */
export function externalDataChunkNames(onnxFileName: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${onnxFileName}_data${i === 0 ? '' : '_' + i}`);
}
