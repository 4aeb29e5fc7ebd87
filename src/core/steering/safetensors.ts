/**
 * A small, strict reader/writer for the safetensors format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes: header length N, u64 little-endian][N bytes: JSON header][data buffer]
 *
 * The header maps tensor names to { dtype, shape, data_offsets: [begin, end] } (offsets relative to the data buffer)
 * and may hold "__metadata__", a string-to-string map. Directions and controller files share this module, so the API
 * speaks only of named Float32Array tensors. We write F32; we read F32, F16 and BF16 (converted to float32), because
 * vectors exported from PyTorch are often half precision.
 *
 * Reading is strict, like the reference Rust implementation: every tensor must lie inside the data buffer, tensors
 * may not overlap, the buffer may have no holes or trailing bytes, and each byte range must match its shape. By
 * default non-finite values are refused too: a NaN in a steering vector or a controller weight is always a bug.
 * Pure (no Node APIs): runs in the browser and in workers.
 */
import { fromFloat16Bits } from '../util/float16.js';

/** A tensor as written: always float32. */
export interface SafetensorsTensor {
  dtype: 'F32';
  shape: number[];
  data: Float32Array;
}

/** Dtypes this reader converts to float32. */
export type SafetensorsReadDtype = 'F32' | 'F16' | 'BF16';

/** A tensor as read: data is float32 whatever the stored dtype; `dtype` says what the file held. */
export interface DecodedSafetensor {
  dtype: SafetensorsReadDtype;
  shape: number[];
  data: Float32Array;
}

export interface DecodedSafetensors {
  tensors: Record<string, DecodedSafetensor>;
  metadata: Record<string, string>;
}

export interface DecodeOptions {
  /** Accept NaN/Infinity in tensor data (default false: refused with the tensor name and element index). */
  allowNonFinite?: boolean;
  /** Name used in error messages (e.g. the file name). */
  source?: string;
}

/** Every malformed-file or bad-input error of this module; `message` names what was wrong and what was expected. */
export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

const BYTES_PER_ELEMENT: Record<SafetensorsReadDtype, number> = { F32: 4, F16: 2, BF16: 2 };
/** Dtypes of the format that we recognise but do not convert (so the error can say "unsupported", not "unknown"). */
const OTHER_KNOWN_DTYPES = new Set(['F64', 'I64', 'I32', 'I16', 'I8', 'U64', 'U32', 'U16', 'U8', 'BOOL', 'F8_E4M3', 'F8_E5M2']);
/** The reference implementation refuses headers over 100 MB; so do we, before allocating anything. */
const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = '__metadata__';

function fail(source: string | undefined, message: string): never {
  throw new SafetensorsError(source ? `${source}: ${message}` : message);
}

function elementCount(shape: number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function checkShape(shape: unknown, where: string, source?: string): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(source, `${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  return shape as number[];
}

/**
 * Serialise named float32 tensors (and optional string metadata) to safetensors bytes. Tensors are laid out in name
 * order so equal inputs give equal bytes; the header is padded with spaces to a multiple of 8 bytes so the data
 * buffer starts 8-byte aligned (as the reference writer does) and every F32 tensor 4-byte aligned. Non-finite values
 * are refused.
 */
export function encodeSafetensors(
  tensors: Record<string, SafetensorsTensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') {
        throw new SafetensorsError(`metadata "${k}" must be a string (safetensors metadata is a string map), got ${typeof v}`);
      }
    }
    header[METADATA_KEY] = { ...metadata };
  }
  let offset = 0;
  for (const name of names) {
    if (name === METADATA_KEY) throw new SafetensorsError(`"${METADATA_KEY}" is reserved and cannot name a tensor`);
    if (name.length === 0) throw new SafetensorsError('tensor names must be non-empty');
    const t = tensors[name];
    if (t.dtype !== 'F32') throw new SafetensorsError(`tensor "${name}": only F32 can be written, got dtype ${String(t.dtype)}`);
    const shape = checkShape(t.shape, `tensor "${name}"`);
    if (!(t.data instanceof Float32Array)) throw new SafetensorsError(`tensor "${name}": data must be a Float32Array`);
    if (t.data.length !== elementCount(shape)) {
      throw new SafetensorsError(
        `tensor "${name}": shape [${shape.join(', ')}] needs ${elementCount(shape)} values, data has ${t.data.length}`,
      );
    }
    const bad = t.data.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) throw new SafetensorsError(`tensor "${name}": value at index ${bad} is ${t.data[bad]}, expected a finite number`);
    const size = t.data.length * 4;
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  const headerBytesRaw = new TextEncoder().encode(json);
  const padded = Math.ceil(headerBytesRaw.length / 8) * 8;
  json += ' '.repeat(padded - headerBytesRaw.length);
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  const dataStart = 8 + headerBytes.length;
  for (const name of names) {
    const entry = header[name] as { data_offsets: [number, number] };
    const data = tensors[name].data;
    // Copy through a byte view: works whatever the source's byteOffset; platforms we target are little-endian,
    // which the check below makes explicit rather than assumed.
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), dataStart + entry.data_offsets[0]);
  }
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
if (!LITTLE_ENDIAN) throw new Error('safetensors.ts assumes a little-endian platform');

function convert(bytes: Uint8Array, dtype: SafetensorsReadDtype): Float32Array {
  if (dtype === 'F32') {
    // Copy into a fresh, aligned buffer so the result never aliases the caller's file bytes. Not bytes.slice():
    // on a Node Buffer (what fs.readFile returns) slice() is a view into a shared pool, not a copy.
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    return new Float32Array(copy.buffer);
  }
  const n = bytes.length / 2;
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'F16') {
    for (let i = 0; i < n; i++) out[i] = fromFloat16Bits(view.getUint16(2 * i, true));
  } else {
    // bfloat16 is the upper half of a float32.
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u32[i] = view.getUint16(2 * i, true) << 16;
  }
  return out;
}

/** Parse safetensors bytes with strict validation. Errors are SafetensorsError naming the tensor and the fault. */
export function decodeSafetensors(bytes: Uint8Array, options: DecodeOptions = {}): DecodedSafetensors {
  const src = options.source;
  if (!(bytes instanceof Uint8Array)) fail(src, 'expected the file contents as a Uint8Array');
  if (bytes.length < 8) fail(src, `file is ${bytes.length} bytes, too short for the 8-byte header length (truncated or not safetensors)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen64 = view.getBigUint64(0, true);
  if (headerLen64 > BigInt(bytes.length - 8)) {
    fail(src, `header length ${headerLen64} runs past the end of the file (${bytes.length - 8} bytes after the length field): truncated or not a safetensors file`);
  }
  const headerLen = Number(headerLen64);
  if (headerLen > MAX_HEADER_BYTES) fail(src, `header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (headerLen < 2) fail(src, `header length ${headerLen} is too small to hold a JSON object`);
  let headerText: string;
  try {
    headerText = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen));
  } catch {
    fail(src, 'header is not valid UTF-8');
  }
  if (!headerText.startsWith('{')) fail(src, 'header must be a JSON object starting with "{" (not a safetensors file?)');
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (e) {
    fail(src, `header is not valid JSON: ${(e as Error).message}`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) fail(src, 'header must be a JSON object');

  const dataStart = 8 + headerLen;
  const dataLen = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  const tensors: Record<string, DecodedSafetensor> = {};

  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA_KEY) {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(src, `"${METADATA_KEY}" must be an object of strings`);
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(src, `metadata "${k}" must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail(src, `tensor "${name}": header entry must be an object`);
    const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = entry.dtype;
    if (typeof dtype !== 'string') fail(src, `tensor "${name}": missing dtype`);
    if (!(dtype in BYTES_PER_ELEMENT)) {
      if (OTHER_KNOWN_DTYPES.has(dtype)) fail(src, `tensor "${name}": dtype ${dtype} is not supported (expected F32, F16 or BF16)`);
      fail(src, `tensor "${name}": unknown dtype "${dtype}" (expected F32, F16 or BF16)`);
    }
    const shape = checkShape(entry.shape, `tensor "${name}"`, src);
    const offs = entry.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      fail(src, `tensor "${name}": data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) fail(src, `tensor "${name}": data_offsets [${begin}, ${end}] end before begin`);
    if (end > dataLen) {
      fail(src, `tensor "${name}": data_offsets [${begin}, ${end}] out of range, the data buffer has ${dataLen} bytes (truncated file?)`);
    }
    const bpe = BYTES_PER_ELEMENT[dtype as SafetensorsReadDtype];
    const expected = elementCount(shape) * bpe;
    if (end - begin !== expected) {
      fail(src, `tensor "${name}": shape [${shape.join(', ')}] of ${dtype} needs ${expected} bytes, data_offsets span ${end - begin}`);
    }
    spans.push({ name, begin, end });
    tensors[name] = { dtype: dtype as SafetensorsReadDtype, shape: [...shape], data: new Float32Array(0) };
  }

  // Tensors must tile the buffer exactly: no overlap (two names sharing bytes), no hole, no trailing bytes.
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const s of spans) {
    if (s.begin < cursor) {
      const prev = spans[spans.indexOf(s) - 1];
      fail(src, `tensors "${prev.name}" and "${s.name}" overlap (byte ${s.begin} < ${cursor})`);
    }
    if (s.begin > cursor) fail(src, `unused bytes ${cursor}..${s.begin} before tensor "${s.name}" (offsets must be contiguous)`);
    cursor = s.end;
  }
  if (cursor !== dataLen) fail(src, `data buffer has ${dataLen} bytes but tensors cover only ${cursor} (trailing bytes)`);

  for (const s of spans) {
    const t = tensors[s.name];
    t.data = convert(bytes.subarray(dataStart + s.begin, dataStart + s.end), t.dtype);
    if (!options.allowNonFinite) {
      const bad = t.data.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) fail(src, `tensor "${s.name}": value at index ${bad} is ${t.data[bad]}, expected finite numbers`);
    }
  }
  return { tensors, metadata };
}
