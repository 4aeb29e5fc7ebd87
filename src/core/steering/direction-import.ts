/**
 * Import of a steering direction from a user's file: a Steerlab direction file (kept as is, after the fit check),
 * another safetensors file, a JSON array, or a .npy array (float32 or float64, 1-D, or [num_layers, hidden] with a
 * chosen layer). The format is detected from the content, not the file name. The result is a DirectionFile with
 * method 'import', ready to save with encodeDirectionFile. Pure (no Node APIs).
 */
import { decoderLayer } from '../model/layer-index.js';
import {
  DIRECTION_FORMAT,
  DIRECTION_FORMAT_VERSION,
  decodeDirectionFile,
  isDirectionFile,
  validateDirectionMetadata,
  type DirectionFile,
  type DirectionMetadata,
  type ModelShape,
} from './direction-file.js';
import type { ModelVariant } from '../model/model-id.js';
import { decodeSafetensors } from './safetensors.js';
import { checkVector, norm, normalize } from './vector.js';

function bad(source: string, message: string): never {
  throw new RangeError(`${source}: ${message}`);
}

export interface ImportOptions extends ModelShape {
  modelId: string;
  /** Display name and variant of the model (SteerableModel.identity), recorded beside its id. */
  modelName?: string;
  modelVariant?: ModelVariant;
  /** Row to take when the user's file holds one vector per layer [num_layers, hidden]. */
  layer?: number;
  /** Creation time (default now); fixed in tests. */
  createdAt?: string;
}

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/**
 * safetensors: a u64 header length whose upper four bytes are zero (no JSON text contains NUL bytes, so a JSON file
 * cannot pass this) followed by the header's "{".
 */
function looksLikeSafetensors(bytes: Uint8Array): boolean {
  return bytes.length >= 9 && bytes[4] === 0 && bytes[5] === 0 && bytes[6] === 0 && bytes[7] === 0 && bytes[8] === 0x7b;
}

function startsWith(bytes: Uint8Array, prefix: number[]): boolean {
  return bytes.length >= prefix.length && prefix.every((b, i) => bytes[i] === b);
}

/** .npy (format 1.0-3.0), little-endian float32 or float64, C order; returns data and shape. */
function parseNpy(bytes: Uint8Array, source: string): { data: Float32Array; shape: number[] } {
  if (bytes.length < 10) bad(source, '.npy file is truncated');
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) bad(source, '.npy file is truncated');
    headerLen = view.getUint32(8, true);
    headerStart = 12;
  } else bad(source, `.npy format version ${major} is not supported (expected 1, 2 or 3)`);
  if (headerStart + headerLen > bytes.length) bad(source, '.npy header runs past the end of the file (truncated)');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(headerStart, headerStart + headerLen));
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) bad(source, '.npy header lacks descr, fortran_order or shape');
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) bad(source, `.npy shape (${shapeText}) is not a tuple of integers`);
  const count = shape.reduce((a, b) => a * b, 1);
  if (fortran === 'True' && shape.length > 1) bad(source, '.npy array is in Fortran order; save it C-ordered (np.ascontiguousarray)');
  const dataStart = headerStart + headerLen;
  let bpe: number;
  if (descr === '<f4' || descr === '=f4') bpe = 4;
  else if (descr === '<f8' || descr === '=f8') bpe = 8;
  else bad(source, `.npy dtype ${descr} is not supported (expected little-endian float32 '<f4' or float64 '<f8')`);
  if (bytes.length - dataStart !== count * bpe) {
    bad(source, `.npy data has ${bytes.length - dataStart} bytes, shape (${shape.join(', ')}) of ${descr} needs ${count * bpe}`);
  }
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = bpe === 4 ? view.getFloat32(dataStart + 4 * i, true) : view.getFloat64(dataStart + 8 * i, true);
  return { data, shape };
}

/** JSON: [h...], [[h...] per layer], or { "direction": [...] }. */
function parseJson(bytes: Uint8Array, source: string): { data: Float32Array; shape: number[] } {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    bad(source, `not valid JSON: ${(e as Error).message}`);
  }
  if (value && typeof value === 'object' && !Array.isArray(value) && 'direction' in value) value = (value as { direction: unknown }).direction;
  if (!Array.isArray(value)) bad(source, 'JSON must be an array of numbers, an array of per-layer arrays, or { "direction": [...] }');
  const numbers = (arr: unknown[], what: string): number[] => {
    arr.forEach((x, i) => {
      if (typeof x !== 'number' || !Number.isFinite(x)) bad(source, `${what}[${i}] is ${JSON.stringify(x)}, expected a finite number`);
    });
    return arr as number[];
  };
  if (value.length > 0 && Array.isArray(value[0])) {
    const rows = value.map((r, i) => (Array.isArray(r) ? numbers(r, `row ${i}`) : bad(source, `row ${i} is not an array`)));
    const H = rows[0].length;
    rows.forEach((r, i) => {
      if (r.length !== H) bad(source, `row ${i} has ${r.length} values, row 0 has ${H}`);
    });
    return { data: Float32Array.from(rows.flat()), shape: [rows.length, H] };
  }
  return { data: Float32Array.from(numbers(value, 'direction')), shape: [value.length] };
}

function parseUserSafetensors(bytes: Uint8Array, source: string): { data: Float32Array; shape: number[] } {
  const { tensors } = decodeSafetensors(bytes, { source });
  const names = Object.keys(tensors);
  const name = 'direction' in tensors ? 'direction' : names.length === 1 ? names[0] : undefined;
  if (name === undefined) {
    bad(source, `cannot tell which tensor is the direction: found ${names.map((n) => `"${n}"`).join(', ') || 'none'}; name it "direction" or keep one tensor`);
  }
  return { data: tensors[name].data, shape: tensors[name].shape };
}

/**
 * Import a direction from a user's file: a Steerlab direction file (kept as is, after the fit check), another
 * safetensors file (tensor "direction" or its only tensor), a JSON array, or a .npy array; format is detected from
 * the content. A 1-D vector must have the model's hidden size; a [num_layers, hidden] array needs options.layer.
 * The vector is normalised into `direction`; the given vector is kept as `rawDirection` (ActAdd may want it raw).
 */
export function importDirection(bytes: Uint8Array, fileName: string, options: ImportOptions): DirectionFile {
  const source = fileName;
  const { hiddenSize: H, numLayers: L } = options;
  if (bytes.length === 0) bad(source, 'file is empty');
  let parsed: { data: Float32Array; shape: number[] };
  if (startsWith(bytes, NPY_MAGIC)) {
    parsed = parseNpy(bytes, source);
  } else if (looksLikeSafetensors(bytes)) {
    const { metadata } = decodeSafetensors(bytes, { source });
    if (isDirectionFile(metadata)) return decodeDirectionFile(bytes, options, source);
    parsed = parseUserSafetensors(bytes, source);
  } else if (/^[\s[{]/.test(String.fromCharCode(bytes[0]))) {
    parsed = parseJson(bytes, source);
  } else {
    bad(source, 'unrecognised file: expected a safetensors file, a JSON array of numbers, or a .npy float32 array');
  }
  const { data, shape } = parsed;
  let vector: Float32Array;
  if (shape.length === 1 || (shape.length === 2 && shape[0] === 1)) {
    if (data.length !== H) bad(source, `the vector has ${data.length} values, but the model's hidden size is ${H}`);
    vector = data;
  } else if (shape.length === 2) {
    if (shape[1] !== H) bad(source, `the array is [${shape.join(', ')}]; its rows have ${shape[1]} values, but the model's hidden size is ${H}`);
    if (shape[0] !== L) bad(source, `the array has ${shape[0]} rows; a per-layer array needs one row per decoder layer (${L})`);
    if (options.layer === undefined) bad(source, `the array holds one vector per layer [${shape.join(', ')}]; choose one with the layer option (0..${L - 1})`);
    if (!Number.isSafeInteger(options.layer) || options.layer < 0 || options.layer >= L) bad(source, `layer ${options.layer} is out of range [0, ${L})`);
    vector = data.slice(options.layer * H, (options.layer + 1) * H);
  } else {
    bad(source, `expected a 1-D vector of ${H} values, got an array of shape [${shape.join(', ')}]`);
  }
  let direction: Float32Array;
  try {
    direction = normalize(checkVector(vector, H, 'imported vector'), 'imported vector');
  } catch (e) {
    bad(source, (e as Error).message);
  }
  const metadata: DirectionMetadata = {
    format: DIRECTION_FORMAT,
    version: DIRECTION_FORMAT_VERSION,
    model_id: options.modelId,
    ...(options.modelName !== undefined ? { model_name: options.modelName } : {}),
    ...(options.modelVariant !== undefined ? { model_variant: { ...options.modelVariant } } : {}),
    hidden_size: H,
    num_layers: L,
    method: 'import',
    created_at: options.createdAt ?? new Date().toISOString(),
    source_file: fileName,
    source_norm: norm(vector),
    ...(shape.length === 2 && shape[0] > 1 && options.layer !== undefined ? { layer: decoderLayer(options.layer, L) } : {}),
  };
  return {
    metadata: validateDirectionMetadata(metadata, source),
    direction,
    rawDirection: Float32Array.from(vector),
    ...(shape.length === 2 && shape[0] > 1 ? { directions: Float32Array.from(data) } : {}),
  };
}
