/**
 * A small GGUF v3 writer (and a reader for checking what it wrote) for llama.cpp control vectors, the format
 * repeng exports and `llama-cli --control-vector` reads:
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

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_ALIGNMENT = 32;
/** ggml_type of a float32 tensor. */
export const GGML_TYPE_F32 = 0;

/** gguf_type of metadata values (the subset we write). */
const T_UINT32 = 4;
const T_INT32 = 5;
const T_FLOAT32 = 6;
const T_STRING = 8;

export type GgufValue = { type: 'string'; value: string } | { type: 'uint32'; value: number } | { type: 'int32'; value: number } | { type: 'float32'; value: number };

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the fastest-varying dimension (a 1-D vector of n has dims [n]). */
  dims: number[];
  data: Float32Array;
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

/** Serialise metadata and F32 tensors to GGUF v3 bytes. Keys and tensor names must be unique. */
export function encodeGguf(metadata: Record<string, GgufValue>, tensors: readonly GgufTensor[]): Uint8Array {
  const names = new Set<string>();
  for (const t of tensors) {
    if (typeof t.name !== 'string' || t.name === '') throw new GgufError('GGUF tensor name must be a non-empty string');
    if (names.has(t.name)) throw new GgufError(`GGUF tensor "${t.name}" is given twice`);
    names.add(t.name);
    if (!(t.data instanceof Float32Array)) throw new GgufError(`GGUF tensor "${t.name}": data must be a Float32Array`);
    if (t.dims.length === 0 || t.dims.some((d) => !Number.isSafeInteger(d) || d <= 0)) {
      throw new GgufError(`GGUF tensor "${t.name}": dims must be positive integers, got [${t.dims.join(', ')}]`);
    }
    const count = t.dims.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) throw new GgufError(`GGUF tensor "${t.name}": dims [${t.dims.join(', ')}] need ${count} values, data has ${t.data.length}`);
    const bad = t.data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new GgufError(`GGUF tensor "${t.name}": value ${bad} is ${t.data[bad]}; every value must be finite`);
  }
  const w = new Writer();
  w.u32(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  const entries = Object.entries(metadata);
  w.u64(entries.length);
  for (const [key, v] of entries) {
    if (key === '') throw new GgufError('GGUF metadata key must be a non-empty string');
    w.string(key);
    switch (v.type) {
      case 'string':
        w.u32(T_STRING);
        w.string(v.value);
        break;
      case 'uint32':
        if (!Number.isInteger(v.value) || v.value < 0 || v.value > 0xffffffff) throw new GgufError(`GGUF metadata ${key}: ${v.value} is not a uint32`);
        w.u32(T_UINT32);
        w.u32(v.value);
        break;
      case 'int32':
        if (!Number.isInteger(v.value) || v.value < -0x80000000 || v.value > 0x7fffffff) throw new GgufError(`GGUF metadata ${key}: ${v.value} is not an int32`);
        w.u32(T_INT32);
        w.i32(v.value);
        break;
      case 'float32':
        if (!Number.isFinite(v.value)) throw new GgufError(`GGUF metadata ${key}: ${v.value} is not a finite number`);
        w.u32(T_FLOAT32);
        w.f32(v.value);
        break;
      default:
        throw new GgufError(`GGUF metadata ${key}: unsupported value type ${JSON.stringify((v as { type?: unknown }).type)}`);
    }
  }
  let offset = 0;
  for (const t of tensors) {
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(GGML_TYPE_F32);
    w.u64(offset);
    offset = align(offset + t.data.length * 4);
  }
  w.padTo(GGUF_ALIGNMENT);
  for (const t of tensors) {
    const bytes = new Uint8Array(t.data.length * 4);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < t.data.length; i++) view.setFloat32(i * 4, t.data[i], true);
    w.bytes(bytes);
    w.padTo(GGUF_ALIGNMENT);
  }
  return w.result();
}

export interface DecodedGguf {
  version: number;
  metadata: Record<string, string | number>;
  tensors: { name: string; dims: number[]; type: number; data: Float32Array }[];
}

/** Reads GGUF v3 files with scalar/string metadata and F32 tensors (what encodeGguf writes); strict on bounds. */
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
  if (u32('magic') !== GGUF_MAGIC) throw new GgufError('not a GGUF file (magic is not "GGUF")');
  const version = u32('version');
  if (version !== GGUF_VERSION) throw new GgufError(`GGUF version ${version} is not supported, expected ${GGUF_VERSION}`);
  const nTensors = u64('tensor count');
  const nKv = u64('metadata count');
  const metadata: Record<string, string | number> = {};
  for (let i = 0; i < nKv; i++) {
    const key = str('metadata key');
    const type = u32(`type of ${key}`);
    if (type === T_STRING) metadata[key] = str(key);
    else if (type === T_UINT32) metadata[key] = u32(key);
    else if (type === T_INT32) metadata[key] = (need(4, key), (p += 4), view.getInt32(p - 4, true));
    else if (type === T_FLOAT32) metadata[key] = (need(4, key), (p += 4), view.getFloat32(p - 4, true));
    else throw new GgufError(`GGUF metadata ${key} has value type ${type}, which this reader does not handle`);
  }
  const infos: { name: string; dims: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str('tensor name');
    const nd = u32(`${name} n_dims`);
    const dims: number[] = [];
    for (let d = 0; d < nd; d++) dims.push(u64(`${name} dim`));
    const type = u32(`${name} type`);
    if (type !== GGML_TYPE_F32) throw new GgufError(`GGUF tensor ${name} has ggml type ${type}, expected F32 (0)`);
    infos.push({ name, dims, type, offset: u64(`${name} offset`) });
  }
  const alignment = typeof metadata['general.alignment'] === 'number' ? (metadata['general.alignment'] as number) : GGUF_ALIGNMENT;
  const dataStart = align(p, alignment);
  const tensors = infos.map((t) => {
    const count = t.dims.reduce((a, b) => a * b, 1);
    const start = dataStart + t.offset;
    if (t.offset % alignment !== 0) throw new GgufError(`GGUF tensor ${t.name} offset ${t.offset} is not aligned to ${alignment}`);
    if (start + count * 4 > bytes.length) throw new GgufError(`GGUF tensor ${t.name} runs past the end of the file`);
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = view.getFloat32(start + i * 4, true);
    return { name: t.name, dims: t.dims, type: t.type, data };
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
