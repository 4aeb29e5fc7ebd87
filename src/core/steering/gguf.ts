/**
 * The project's GGUF v3 writer (and a reader for checking what it wrote): llama.cpp control vectors here, and llama.cpp
 * model files (src/core/model/gguf-export.ts) with array metadata and F32 / F16 / Q8_0 / Q4_0 tensors.
 *
 * Control vectors, the format repeng exports and `llama-cli --control-vector` reads:
 *
 *   general.architecture = "controlvector", controlvector.model_hint = "<model family>",
 *   controlvector.layer_count = <number of direction tensors>, one 1-D F32 tensor `direction.{k}` per layer.
 *
 * llama.cpp (common_control_vector_load_one) adds `direction.{k}` to the output of block k (0-based), at every
 * position, and REJECTS k = 0 ("invalid (zero) direction tensor layer index"). So steering row l (the output of
 * decoder layer l, as in Steerlab's steering matrix) becomes `direction.{l}` for l >= 1; row 0 cannot be expressed
 * and is left out with a warning when it is non-zero. The metadata is cosmetic for llama.cpp (it reads only the
 * tensors) but repeng and llama.cpp's own generator write it, so we do too.
 *
 * Layout (GGUF v3, little-endian): magic "GGUF", u32 version 3, u64 tensor count, u64 key/value count, the key/value
 * pairs, the tensor infos (name, n_dims, u64 dims, u32 type, u64 offset into the data section), padding to
 * general.alignment (32), then the tensor data, each tensor starting on a 32-byte boundary. Pure (no Node APIs).
 */

import { fromFloat16Bits, toFloat16Bits } from '../util/float16.js';
import { concatBytes } from '../util/bytes.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_ALIGNMENT = 32;
/** ggml_type of a float32 tensor. */
export const GGML_TYPE_F32 = 0;
/** ggml_type ids of the tensor types the writer encodes, and their block layout (values per block, bytes per block). */
export const GGML_TYPES = {
  f32: { id: 0, block: 1, bytes: 4 },
  f16: { id: 1, block: 1, bytes: 2 },
  q4_0: { id: 2, block: 32, bytes: 18 },
  q8_0: { id: 8, block: 32, bytes: 34 },
} as const;
export type GgmlTypeName = keyof typeof GGML_TYPES;

/** gguf_type of metadata values (the subset we write). */
const T_UINT32 = 4;
const T_INT32 = 5;
const T_FLOAT32 = 6;
const T_BOOL = 7;
const T_STRING = 8;
const T_ARRAY = 9;

export type GgufValue =
  | { type: 'string'; value: string }
  | { type: 'uint32'; value: number }
  | { type: 'int32'; value: number }
  | { type: 'float32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'array'; itemType: 'string'; value: readonly string[] }
  | { type: 'array'; itemType: 'int32' | 'uint32' | 'float32'; value: readonly number[] | Int32Array | Float32Array };

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the fastest-varying dimension (a 1-D vector of n has dims [n]). */
  dims: number[];
  /** The values, row-major in ggml order (dims[0] fastest); encoded as `type` (default f32). */
  data?: Float32Array;
  /** Already-encoded bytes of `type` (e.g. 4-bit codes repacked from an ONNX MatMulNBits), instead of data. */
  raw?: Uint8Array;
  type?: GgmlTypeName;
}

export class GgufError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GgufError';
  }
}

const utf8 = new TextEncoder();

function align(n: number, a = GGUF_ALIGNMENT): number {
  return Math.ceil(n / a) * a;
}

/** Growable little-endian byte writer. */
class Writer {
  private buf = new Uint8Array(1024);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private ensure(extra: number): void {
    if (this.length + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + extra) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.length++] = v;
  }
  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number): void {
    this.ensure(4);
    this.view.setInt32(this.length, v, true);
    this.length += 4;
  }
  f32(v: number): void {
    this.ensure(4);
    this.view.setFloat32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number): void {
    this.ensure(8);
    this.view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  string(s: string): void {
    const b = utf8.encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  padTo(a: number): void {
    const n = align(this.length, a) - this.length;
    this.ensure(n);
    this.length += n; // the buffer is zero-filled
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

/** Bytes of one tensor's data in its ggml type. */
function tensorBytes(t: GgufTensor): Uint8Array {
  const type = t.type ?? 'f32';
  if (t.raw) return t.raw;
  const x = t.data!;
  if (type === 'f32') {
    const out = new Uint8Array(x.length * 4);
    const v = new DataView(out.buffer);
    for (let i = 0; i < x.length; i++) v.setFloat32(i * 4, x[i]!, true);
    return out;
  }
  if (type === 'f16') {
    const out = new Uint8Array(x.length * 2);
    const v = new DataView(out.buffer);
    for (let i = 0; i < x.length; i++) v.setUint16(i * 2, toFloat16Bits(x[i]!), true);
    return out;
  }
  return type === 'q8_0' ? quantizeQ8_0(x) : quantizeQ4_0(x);
}

/**
 * ggml's Q8_0 (quantize_row_q8_0_ref): blocks of 32 values, an fp16 scale d = absmax / 127 then 32 int8 codes
 * round(x / d).
 */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const v = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    v.setUint16(b * 34, toFloat16Bits(d), true);
    for (let j = 0; j < 32; j++) v.setInt8(b * 34 + 2 + j, Math.round(Math.fround(x[b * 32 + j]! * id)));
  }
  return out;
}

/**
 * ggml's Q4_0 (quantize_row_q4_0_ref): blocks of 32 values, an fp16 scale d = max / -8 (max: the value of largest
 * magnitude, with its sign), then 16 bytes: value j in the low nibble of byte j, value 16 + j in its high nibble,
 * each min(15, trunc(x / d + 8.5)).
 */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 18);
  const v = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const y = x[b * 32 + j]!;
      if (Math.abs(y) > amax) {
        amax = Math.abs(y);
        max = y;
      }
    }
    const d = Math.fround(max / -8);
    const id = d ? Math.fround(1 / d) : 0;
    v.setUint16(b * 18, toFloat16Bits(d), true);
    for (let j = 0; j < 16; j++) {
      const x0 = Math.fround(x[b * 32 + j]! * id);
      const x1 = Math.fround(x[b * 32 + 16 + j]! * id);
      const q0 = Math.min(15, Math.trunc(Math.fround(x0 + 8.5)));
      const q1 = Math.min(15, Math.trunc(Math.fround(x1 + 8.5)));
      out[b * 18 + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

function checkTensor(t: GgufTensor): number {
  if (typeof t.name !== 'string' || t.name === '') throw new GgufError('GGUF tensor name must be a non-empty string');
  const type = t.type ?? 'f32';
  const spec = GGML_TYPES[type];
  if (!spec) throw new GgufError(`GGUF tensor "${t.name}": type ${String(type)} is not one of ${Object.keys(GGML_TYPES).join(', ')}`);
  if (t.dims.length === 0 || t.dims.some((d) => !Number.isSafeInteger(d) || d <= 0)) {
    throw new GgufError(`GGUF tensor "${t.name}": dims must be positive integers, got [${t.dims.join(', ')}]`);
  }
  const count = t.dims.reduce((a, b) => a * b, 1);
  if (t.dims[0]! % spec.block !== 0) throw new GgufError(`GGUF tensor "${t.name}": ${type} needs dims[0] to be a multiple of ${spec.block}, got ${t.dims[0]}`);
  const size = (count / spec.block) * spec.bytes;
  if (t.raw !== undefined) {
    if (!(t.raw instanceof Uint8Array) || t.raw.length !== size) throw new GgufError(`GGUF tensor "${t.name}": raw ${type} data must be ${size} bytes, got ${t.raw?.length}`);
    return size;
  }
  if (!(t.data instanceof Float32Array)) throw new GgufError(`GGUF tensor "${t.name}": data must be a Float32Array`);
  if (count !== t.data.length) throw new GgufError(`GGUF tensor "${t.name}": dims [${t.dims.join(', ')}] need ${count} values, data has ${t.data.length}`);
  const bad = t.data.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) throw new GgufError(`GGUF tensor "${t.name}": value ${bad} is ${t.data[bad]}; every value must be finite`);
  return size;
}

function writeValue(w: Writer, key: string, v: GgufValue): void {
  const num = (type: 'uint32' | 'int32' | 'float32', x: number, where: string) => {
    if (type === 'uint32') {
      if (!Number.isInteger(x) || x < 0 || x > 0xffffffff) throw new GgufError(`GGUF metadata ${where}: ${x} is not a uint32`);
      w.u32(x);
    } else if (type === 'int32') {
      if (!Number.isInteger(x) || x < -0x80000000 || x > 0x7fffffff) throw new GgufError(`GGUF metadata ${where}: ${x} is not an int32`);
      w.i32(x);
    } else {
      if (!Number.isFinite(x)) throw new GgufError(`GGUF metadata ${where}: ${x} is not a finite number`);
      w.f32(x);
    }
  };
  const code = { uint32: T_UINT32, int32: T_INT32, float32: T_FLOAT32, string: T_STRING } as const;
  switch (v.type) {
    case 'string':
      w.u32(T_STRING);
      w.string(v.value);
      break;
    case 'uint32':
    case 'int32':
    case 'float32':
      w.u32(code[v.type]);
      num(v.type, v.value, key);
      break;
    case 'bool':
      if (typeof v.value !== 'boolean') throw new GgufError(`GGUF metadata ${key}: ${String((v as { value: unknown }).value)} is not a boolean`);
      w.u32(T_BOOL);
      w.u8(v.value ? 1 : 0);
      break;
    case 'array': {
      const items = v.value;
      if (!(v.itemType in code)) throw new GgufError(`GGUF metadata ${key}: array items of type ${String(v.itemType)} are not supported`);
      w.u32(T_ARRAY);
      w.u32(code[v.itemType]);
      w.u64(items.length);
      for (let i = 0; i < items.length; i++) {
        if (v.itemType === 'string') {
          if (typeof items[i] !== 'string') throw new GgufError(`GGUF metadata ${key}[${i}] is not a string`);
          w.string(items[i] as string);
        } else num(v.itemType, items[i] as number, `${key}[${i}]`);
      }
      break;
    }
    default:
      throw new GgufError(`GGUF metadata ${key}: unsupported value type ${JSON.stringify((v as unknown as { type?: unknown }).type)}`);
  }
}

/**
 * GGUF v3 as a list of byte chunks (header, then each tensor's data padded to the alignment), so that a model of
 * hundreds of MB is never copied into one growing buffer; concatenated, they are the file. Keys and tensor names
 * must be unique.
 */
export function encodeGgufParts(metadata: Record<string, GgufValue>, tensors: readonly GgufTensor[]): Uint8Array[] {
  const names = new Set<string>();
  const sizes = tensors.map((t) => {
    const size = checkTensor(t);
    if (names.has(t.name)) throw new GgufError(`GGUF tensor "${t.name}" is given twice`);
    names.add(t.name);
    return size;
  });
  const w = new Writer();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  const entries = Object.entries(metadata);
  w.u64(entries.length);
  for (const [key, v] of entries) {
    if (key === '') throw new GgufError('GGUF metadata key must be a non-empty string');
    w.string(key);
    writeValue(w, key, v);
  }
  let offset = 0;
  tensors.forEach((t, i) => {
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(GGML_TYPES[t.type ?? 'f32'].id);
    w.u64(offset);
    offset = align(offset + sizes[i]!);
  });
  w.padTo(GGUF_ALIGNMENT);
  const parts = [w.result()];
  for (const t of tensors) {
    const bytes = tensorBytes(t);
    parts.push(bytes);
    const pad = align(bytes.length) - bytes.length;
    if (pad) parts.push(new Uint8Array(pad));
  }
  return parts;
}

/** Serialise metadata and tensors to GGUF v3 bytes (one buffer: for small files; see encodeGgufParts). */
export function encodeGguf(metadata: Record<string, GgufValue>, tensors: readonly GgufTensor[]): Uint8Array {
  return concatBytes(encodeGgufParts(metadata, tensors));
}

export interface DecodedGguf {
  version: number;
  metadata: Record<string, GgufDecodedValue>;
  /** data: the values (f16, q8_0 and q4_0 dequantised); raw: the tensor's bytes as stored. */
  tensors: { name: string; dims: number[]; type: number; data: Float32Array; raw: Uint8Array }[];
}

export type GgufDecodedValue = string | number | boolean | (string | number | boolean)[];

/** Dequantises ggml tensor bytes of a type the writer encodes. */
export function dequantizeGgml(type: GgmlTypeName, raw: Uint8Array, count: number): Float32Array {
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out = new Float32Array(count);
  if (type === 'f32') for (let i = 0; i < count; i++) out[i] = v.getFloat32(4 * i, true);
  else if (type === 'f16') for (let i = 0; i < count; i++) out[i] = fromFloat16Bits(v.getUint16(2 * i, true));
  else if (type === 'q8_0') {
    for (let b = 0; b < count / 32; b++) {
      const d = fromFloat16Bits(v.getUint16(b * 34, true));
      for (let j = 0; j < 32; j++) out[b * 32 + j] = d * v.getInt8(b * 34 + 2 + j);
    }
  } else {
    for (let b = 0; b < count / 32; b++) {
      const d = fromFloat16Bits(v.getUint16(b * 18, true));
      for (let j = 0; j < 16; j++) {
        const q = raw[b * 18 + 2 + j]!;
        out[b * 32 + j] = ((q & 15) - 8) * d;
        out[b * 32 + 16 + j] = ((q >> 4) - 8) * d;
      }
    }
  }
  return out;
}

/** Reads GGUF v3 files with the metadata and tensor types encodeGguf writes; strict on bounds. */
export function decodeGguf(bytes: Uint8Array): DecodedGguf {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  const need = (n: number, what: string) => {
    if (p + n > bytes.length) throw new GgufError(`GGUF truncated while reading ${what} at byte ${p}`);
  };
  const u32 = (what: string) => (need(4, what), (p += 4), view.getUint32(p - 4, true));
  const u64 = (what: string) => {
    need(8, what);
    const v = view.getBigUint64(p, true);
    p += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufError(`GGUF ${what} ${v} is too large`);
    return Number(v);
  };
  const str = (what: string) => {
    const n = u64(`${what} length`);
    need(n, what);
    let s: string;
    try {
      s = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(p, p + n));
    } catch {
      throw new GgufError(`GGUF ${what} at byte ${p} is not valid UTF-8 text`);
    }
    p += n;
    return s;
  };
  const scalar = (type: number, key: string): string | number | boolean => {
    if (type === T_STRING) return str(key);
    if (type === T_UINT32) return u32(key);
    if (type === T_INT32) return need(4, key), (p += 4), view.getInt32(p - 4, true);
    if (type === T_FLOAT32) return need(4, key), (p += 4), view.getFloat32(p - 4, true);
    if (type === T_BOOL) return need(1, key), (p += 1), bytes[p - 1] !== 0;
    throw new GgufError(`GGUF metadata ${key} has value type ${type}, which this reader does not handle`);
  };
  if (u32('magic') !== GGUF_MAGIC) throw new GgufError('not a GGUF file (magic is not "GGUF")');
  const version = u32('version');
  if (version !== GGUF_VERSION) throw new GgufError(`GGUF version ${version} is not supported, expected ${GGUF_VERSION}`);
  const nTensors = u64('tensor count');
  const nKv = u64('metadata count');
  const metadata: Record<string, GgufDecodedValue> = {};
  for (let i = 0; i < nKv; i++) {
    const key = str('metadata key');
    const type = u32(`type of ${key}`);
    if (type === T_ARRAY) {
      const itemType = u32(`item type of ${key}`);
      const n = u64(`length of ${key}`);
      const items: (string | number | boolean)[] = [];
      for (let k = 0; k < n; k++) items.push(scalar(itemType, `${key}[${k}]`));
      metadata[key] = items;
    } else metadata[key] = scalar(type, key);
  }
  const byId = new Map<number, GgmlTypeName>(Object.entries(GGML_TYPES).map(([k, v]) => [v.id, k as GgmlTypeName]));
  const infos: { name: string; dims: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str('tensor name');
    const nd = u32(`${name} n_dims`);
    const dims: number[] = [];
    for (let d = 0; d < nd; d++) dims.push(u64(`${name} dim`));
    const type = u32(`${name} type`);
    if (!byId.has(type)) throw new GgufError(`GGUF tensor ${name} has ggml type ${type}, expected one of F32 (0), F16 (1), Q4_0 (2), Q8_0 (8)`);
    infos.push({ name, dims, type, offset: u64(`${name} offset`) });
  }
  const alignment = typeof metadata['general.alignment'] === 'number' ? (metadata['general.alignment'] as number) : GGUF_ALIGNMENT;
  const dataStart = align(p, alignment);
  const tensors = infos.map((t) => {
    const count = t.dims.reduce((a, b) => a * b, 1);
    const name = byId.get(t.type)!;
    const spec = GGML_TYPES[name];
    const size = (count / spec.block) * spec.bytes;
    const start = dataStart + t.offset;
    if (t.offset % alignment !== 0) throw new GgufError(`GGUF tensor ${t.name} offset ${t.offset} is not aligned to ${alignment}`);
    if (start + size > bytes.length) throw new GgufError(`GGUF tensor ${t.name} runs past the end of the file`);
    const raw = bytes.subarray(start, start + size);
    return { name: t.name, dims: t.dims, type: t.type, data: dequantizeGgml(name, raw, count), raw };
  });
  return { version, metadata, tensors };
}

export interface ControlVectorOptions {
  numLayers: number;
  hiddenSize: number;
  /** Written as controlvector.model_hint, e.g. "llama" or the hub id's family. */
  modelHint: string;
}

export interface ControlVectorExport {
  bytes: Uint8Array;
  /** Steering rows written, as llama.cpp layer indices. */
  layers: number[];
  /** Non-blocking problems, e.g. a non-zero row 0 that llama.cpp cannot take. */
  warnings: string[];
}

/**
 * A llama.cpp control vector from a steering matrix [numLayers * hiddenSize] (row l = what is added after decoder
 * layer l, per-layer weights and scale already multiplied in, e.g. policies.steeringMatrix's output). All-zero rows
 * are left out (llama.cpp treats a missing layer as zero); row 0 is always left out (see the file comment).
 */
export function encodeControlVector(matrix: Float32Array, o: ControlVectorOptions): ControlVectorExport {
  const { numLayers: L, hiddenSize: H } = o;
  if (!Number.isSafeInteger(L) || L <= 0) throw new GgufError(`numLayers must be a positive integer, got ${L}`);
  if (!Number.isSafeInteger(H) || H <= 0) throw new GgufError(`hiddenSize must be a positive integer, got ${H}`);
  if (!(matrix instanceof Float32Array) || matrix.length !== L * H) {
    throw new GgufError(`steering matrix must be a Float32Array of numLayers ${L} x hiddenSize ${H} = ${L * H} values, got ${matrix?.length}`);
  }
  if (typeof o.modelHint !== 'string' || o.modelHint.trim() === '') throw new GgufError('modelHint must be a non-empty string (controlvector.model_hint)');
  const warnings: string[] = [];
  const rowIsZero = (l: number) => matrix.subarray(l * H, (l + 1) * H).every((x) => x === 0);
  if (!rowIsZero(0)) warnings.push('row 0 (output of decoder layer 0) is non-zero but llama.cpp rejects direction.0; it was left out');
  const tensors: GgufTensor[] = [];
  const layers: number[] = [];
  for (let l = 1; l < L; l++) {
    if (rowIsZero(l)) continue;
    tensors.push({ name: `direction.${l}`, dims: [H], data: matrix.slice(l * H, (l + 1) * H) });
    layers.push(l);
  }
  if (tensors.length === 0) throw new GgufError('the steering matrix has no non-zero row from layer 1 on: a control vector would be empty');
  const bytes = encodeGguf(
    {
      'general.architecture': { type: 'string', value: 'controlvector' },
      'controlvector.model_hint': { type: 'string', value: o.modelHint },
      'controlvector.layer_count': { type: 'uint32', value: tensors.length },
    },
    tensors,
  );
  return { bytes, layers, warnings };
}
