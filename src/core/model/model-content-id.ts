/**
 * Computing a model's identity (model-id.ts): a hub model is named by its hub id; a local folder by its content.
 *
 * What the content id hashes (IDENTITY_RULE, version 1). It should name the model's WEIGHTS, not one of its graph
 * files, so that an fp32 graph and a quantised graph of the same weights in one folder share the id (an artefact made
 * with one and loaded with the other gets a variant warning, as a quantised copy of a hub model does), while a
 * retrained model with the same config and tokenizer gets another id. So the manifest holds, one line each:
 *   - config.json: parsed, without its "transformers.js_config" entry (loader hints such as per-file dtypes, which
 *     change when a variant is added, not when the model does), re-serialised with sorted keys;
 *   - tokenizer.json and tokenizer_config.json (vocabulary, chat template): their bytes ("absent" when missing);
 *   - the REFERENCE graph: onnx/{name}.onnx (the fp32 graph of the loaded model_file_name) when the folder has it,
 *     else the loaded graph itself; and every external-data file it names.
 * Each file is digested whole when it has at most WHOLE_FILE_LIMIT bytes; a larger one (external data of gigabytes,
 * or a graph with its weights inline) by its size, its first and last MiB and SAMPLE_SLICES slices of 64 KiB spread
 * evenly between them, so naming a model never reads gigabytes. A graph file over the limit is taken to hold its
 * weights inline (its external data, if any, is not listed). The id is the first 16 hex digits of the SHA-256 of
 * the manifest text; contentModelId() returns the manifest too, so a mismatch can be explained.
 *
 * Platform-free: SHA-256 comes from WebCrypto (crypto.subtle, Node 20 and browsers), files from a ModelFileReader:
 * fetchFileReader() (HTTP with Range requests: the lab's worker, a model folder served by the app) or node-io.ts's
 * folderFileReader() (Node, loaded on demand). The same folder gives the same id through both (a test checks it).
 */
import { sha256Hex } from '../util/sha256.js';
import { externalDataLocations } from './external-data.js';
import { DTYPE_SUFFIX } from './hub-paths.js';
import { ModelIdentityError, type ModelIdentity, type ModelVariant } from './model-id.js';
import type { Dtype } from './types.js';

/** Reads files of a model folder by their path inside it ('config.json', 'onnx/model.onnx'). */
export interface ModelFileReader {
  /** Size in bytes, or null when the folder has no such file. */
  size(file: string): Promise<number | null>;
  /** Bytes [start, end) of the file. */
  read(file: string, start: number, end: number): Promise<Uint8Array>;
}


export const IDENTITY_RULE = 'steerlab-model-identity/1';
/** Files up to this size are digested whole. */
export const WHOLE_FILE_LIMIT = 64 * 1024 * 1024;
const EDGE = 1024 * 1024;
const SLICE = 64 * 1024;
/** Slices between the first and the last MiB of a file over the limit. */
export const SAMPLE_SLICES = 32;

/** The graph file of a model_file_name and dtype: onnx/{name}{dtype suffix}.onnx (transformers.js's naming). */
export function graphFileOf(modelFileName: string, dtype: Dtype): string {
  const suffix = DTYPE_SUFFIX[dtype];
  if (suffix === undefined) throw new ModelIdentityError(`unknown dtype ${JSON.stringify(dtype)}`);
  return `onnx/${modelFileName}${suffix}.onnx`;
}

/** Byte ranges digested for a file of `size` bytes: [[0, size]] up to the limit, else edges plus spread slices. */
export function identityRanges(size: number): [number, number][] {
  if (!Number.isSafeInteger(size) || size < 0) throw new ModelIdentityError(`file size must be a non-negative integer, got ${size}`);
  if (size <= WHOLE_FILE_LIMIT) return [[0, size]];
  const out: [number, number][] = [[0, EDGE]];
  const span = size - 2 * EDGE - SLICE;
  for (let i = 1; i <= SAMPLE_SLICES; i++) {
    const start = EDGE + Math.floor((span * i) / (SAMPLE_SLICES + 1));
    out.push([start, start + SLICE]);
  }
  out.push([size - EDGE, size]);
  return out;
}

function sortedJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(sortedJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${sortedJson(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/** config.json as the identity sees it: without the loader's hints, keys sorted. */
export function canonicalConfig(bytes: Uint8Array): Uint8Array {
  let cfg: unknown;
  try {
    cfg = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new ModelIdentityError(`config.json is not valid JSON: ${(e as Error).message}`);
  }
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) throw new ModelIdentityError('config.json must hold a JSON object');
  const rest = { ...(cfg as Record<string, unknown>) };
  delete rest['transformers.js_config'];
  return new TextEncoder().encode(sortedJson(rest));
}

/** One manifest line: "<file> <size> <whole|sampled|canonical> <sha256>" or "<file> absent". */
async function fileLine(reader: ModelFileReader, file: string, transform?: (b: Uint8Array) => Uint8Array): Promise<{ line: string; bytes: Uint8Array | null }> {
  const size = await reader.size(file);
  if (size === null) return { line: `${file} absent`, bytes: null };
  const ranges = identityRanges(size);
  const parts: Uint8Array[] = [];
  for (const [a, b] of ranges) {
    const part = await reader.read(file, a, b);
    if (part.byteLength !== b - a) throw new ModelIdentityError(`${file}: read ${part.byteLength} bytes at ${a}, expected ${b - a}`);
    parts.push(part);
  }
  const whole = ranges.length === 1;
  if (whole && transform) {
    // A canonical form (config.json): its length and digest, so formatting does not count.
    const canonical = transform(parts[0]!);
    return { line: `${file} ${canonical.byteLength} canonical ${await sha256Hex(canonical)}`, bytes: parts[0]! };
  }
  const digest = await sha256Hex(...parts);
  return { line: `${file} ${size} ${whole ? 'whole' : 'sampled'} ${digest}`, bytes: whole ? parts[0]! : null };
}

export interface IdentityManifest {
  /** The text whose SHA-256 gives the id (first line: the rule's version). */
  text: string;
  /** The graph the id was computed from (the fp32 reference, or the loaded graph when there is none). */
  referenceGraph: string;
}

/**
 * Content id of a local model folder (see the rule at the top of this file). `variant` is the graph being loaded;
 * `modelFileName` its transformers.js model_file_name ('model', 'decoder_model_merged').
 */
export async function contentModelId(reader: ModelFileReader, o: { modelFileName: string; variant: ModelVariant }): Promise<{ id: string; manifest: IdentityManifest }> {
  const lines = [IDENTITY_RULE];
  const config = await fileLine(reader, 'config.json', canonicalConfig);
  if (config.line.endsWith(' absent')) throw new ModelIdentityError('the model folder has no config.json');
  lines.push(config.line);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) lines.push((await fileLine(reader, f)).line);
  const fp32 = graphFileOf(o.modelFileName, 'fp32');
  const referenceGraph = (await reader.size(fp32)) !== null ? fp32 : o.variant.graph;
  const graph = await fileLine(reader, referenceGraph);
  if (graph.line.endsWith(' absent')) throw new ModelIdentityError(`the model folder has no ${referenceGraph}`);
  lines.push(graph.line);
  if (graph.bytes) {
    const dir = referenceGraph.slice(0, referenceGraph.lastIndexOf('/') + 1);
    for (const loc of externalDataLocations(graph.bytes)) {
      if (loc.startsWith('/') || loc.includes('\\') || loc.split('/').includes('..')) throw new ModelIdentityError(`${referenceGraph} names external data outside its folder: ${JSON.stringify(loc)}`);
      const line = await fileLine(reader, `${dir}${loc}`);
      if (line.line.endsWith(' absent')) throw new ModelIdentityError(`${referenceGraph} names external data ${loc}, which the folder does not have`);
      lines.push(line.line);
    }
  }
  const text = `${lines.join('\n')}\n`;
  return { id: `sha256:${(await sha256Hex(new TextEncoder().encode(text))).slice(0, 16)}`, manifest: { text, referenceGraph } };
}

export type ModelSource = { kind: 'hub'; id: string } | { kind: 'folder'; name: string; files: ModelFileReader };

/**
 * THE model identity: a hub model by its hub id, a local folder by its content (contentModelId) with the folder's
 * name for display. Both record the variant (dtype and graph file) loaded.
 */
export async function modelIdentity(source: ModelSource, loaded: { dtype: Dtype; modelFileName: string }): Promise<ModelIdentity> {
  const variant: ModelVariant = { dtype: loaded.dtype, graph: graphFileOf(loaded.modelFileName, loaded.dtype) };
  if (source.kind === 'hub') {
    if (typeof source.id !== 'string' || source.id.trim() === '') throw new ModelIdentityError('a hub model needs its hub id ("org/name")');
    return { id: source.id, name: source.id, variant };
  }
  const { id } = await contentModelId(source.files, { modelFileName: loaded.modelFileName, variant });
  return { id, name: source.name, variant };
}

// ------------------------------------------------------------------------------------------------ readers

function checkRange(file: string, start: number, end: number, size: number): void {
  if (!(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0 && start <= end && end <= size)) {
    throw new ModelIdentityError(`${file}: byte range [${start}, ${end}) is outside the file (${size} bytes)`);
  }
}

/** A reader over files already in memory (tests; a lab that holds the bytes). */
export function memoryFileReader(files: Record<string, Uint8Array>): ModelFileReader {
  return {
    size: async (f) => files[f]?.byteLength ?? null,
    read: async (f, a, b) => {
      const bytes = files[f];
      if (!bytes) throw new ModelIdentityError(`no file ${f}`);
      checkRange(f, a, b, bytes.byteLength);
      return bytes.subarray(a, b);
    },
  };
}

/**
 * A reader over a model folder served over HTTP (the lab's embedded models, any static host): HEAD for sizes, Range
 * requests for slices. A server that ignores Range is read from the start and the stream is cut at `end`.
 */
export function fetchFileReader(baseUrl: string, fetchFn: typeof fetch = (...a) => fetch(...a)): ModelFileReader {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  const sizes = new Map<string, number | null>();
  const url = (f: string) => `${base}${f.split('/').map(encodeURIComponent).join('/')}`;
  const sizeOf = async (f: string): Promise<number | null> => {
    if (sizes.has(f)) return sizes.get(f)!;
    const r = await fetchFn(url(f), { method: 'HEAD' });
    // The (empty) body of a HEAD is read so the request ends cleanly: an unread one shows as aborted in the browser.
    await r.arrayBuffer().catch(() => undefined);
    // A single-page-app host answers a missing file with its index.html: not a model file.
    const html = (r.headers.get('content-type') ?? '').includes('text/html');
    let size: number | null = null;
    if (r.ok && !html) {
      const len = r.headers.get('content-length');
      if (len !== null && /^\d+$/.test(len)) size = Number(len);
      else size = (await readUpTo(await fetchFn(url(f)), Infinity)).byteLength;
    } else if (r.status !== 404 && r.status !== 410 && !html) {
      throw new ModelIdentityError(`${url(f)}: HTTP ${r.status}`);
    }
    sizes.set(f, size);
    return size;
  };
  return {
    size: sizeOf,
    read: async (f, a, b) => {
      const size = await sizeOf(f);
      if (size === null) throw new ModelIdentityError(`no file ${url(f)}`);
      checkRange(f, a, b, size);
      if (a === b) return new Uint8Array(0);
      const whole = a === 0 && b === size;
      const r = await fetchFn(url(f), whole ? {} : { headers: { Range: `bytes=${a}-${b - 1}` } });
      if (r.status === 206) return readUpTo(r, b - a);
      if (r.status !== 200) throw new ModelIdentityError(`${url(f)}: HTTP ${r.status}`);
      return (await readUpTo(r, b)).subarray(a, b);
    },
  };
}

/**
 * The first `limit` bytes of a response body (all of it when shorter); the rest of the stream is cancelled. A body
 * read to its announced length is read to its end instead: a cancelled request shows as aborted in the browser.
 */
async function readUpTo(r: Response, limit: number): Promise<Uint8Array> {
  if (!r.body) return new Uint8Array(await r.arrayBuffer()).subarray(0, limit);
  const reader = r.body.getReader();
  const chunks: Uint8Array[] = [];
  const announced = Number(r.headers.get('content-length') ?? Number.NaN);
  let n = 0;
  let ended = false;
  while (n < limit) {
    const { done, value } = await reader.read();
    if (done) {
      ended = true;
      break;
    }
    chunks.push(value);
    n += value.byteLength;
  }
  if (!ended && n >= announced) ended = (await reader.read()).done;
  if (!ended) await reader.cancel().catch(() => {});
  const out = new Uint8Array(Math.min(n, limit));
  let off = 0;
  for (const c of chunks) {
    const take = Math.min(c.byteLength, out.byteLength - off);
    out.set(c.subarray(0, take), off);
    off += take;
    if (off >= out.byteLength) break;
  }
  return out;
}

