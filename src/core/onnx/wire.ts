/**
 * Protobuf wire format, just enough to splice ONNX models: scan a message into its fields with byte ranges (every
 * length bounds-checked, nothing copied), and write fields as a list of byte chunks that is concatenated once.
 *
 * Why not re-encode with onnx-buf: re-encoding a model costs seconds and ~3x its size in memory (docs/METHOD-NOTES.md 4). The
 * patcher only touches a few small messages, so it copies every other field's bytes verbatim from these ranges.
 */

export class WireError extends Error {
  constructor(message: string, readonly offset: number) {
    super(`${message} (at byte ${offset})`);
    this.name = 'WireError';
  }
}

export const WT_VARINT = 0;
export const WT_I64 = 1;
export const WT_LEN = 2;
export const WT_I32 = 5;

/** One field occurrence inside a message: [start, end) covers tag + payload, [valueStart, end) the payload. */
export interface Field {
  no: number;
  wt: number;
  start: number;
  valueStart: number;
  end: number;
}

/**
 * Reads a varint at `pos` (not past `end`). Values above 2^53 lose precision, which is harmless: such a value is
 * never a valid length or field number here and is rejected by the bounds checks that follow.
 */
export function readVarint(buf: Uint8Array, pos: number, end: number): { value: number; next: number } {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new WireError('truncated varint', pos);
    const b = buf[pos++];
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) return { value, next: pos };
    scale *= 128;
  }
  throw new WireError('varint longer than 10 bytes', pos);
}

/** Scans the fields of the message in buf[start, end). Throws WireError on any malformed or out-of-range field. */
export function scanMessage(buf: Uint8Array, start = 0, end = buf.length): Field[] {
  if (start < 0 || end > buf.length || start > end) throw new WireError(`message range [${start}, ${end}) outside buffer`, start);
  const fields: Field[] = [];
  let pos = start;
  while (pos < end) {
    const fieldStart = pos;
    const tag = readVarint(buf, pos, end);
    pos = tag.next;
    const no = Math.floor(tag.value / 8);
    const wt = tag.value % 8;
    if (no < 1 || no > 536870911) throw new WireError(`invalid field number ${no}`, fieldStart);
    let valueStart = pos;
    switch (wt) {
      case WT_VARINT:
        pos = readVarint(buf, pos, end).next;
        break;
      case WT_I64:
        pos += 8;
        break;
      case WT_I32:
        pos += 4;
        break;
      case WT_LEN: {
        const len = readVarint(buf, pos, end);
        valueStart = len.next;
        // Compare before adding so that a huge declared length never becomes an allocation or a wrapped index.
        if (len.value > end - valueStart) {
          throw new WireError(`field ${no} declares ${len.value} bytes but only ${end - valueStart} remain`, fieldStart);
        }
        pos = valueStart + len.value;
        break;
      }
      default:
        throw new WireError(`unsupported wire type ${wt} for field ${no}`, fieldStart);
    }
    if (pos > end) throw new WireError(`field ${no} runs past the end of its message`, fieldStart);
    fields.push({ no, wt, start: fieldStart, valueStart, end: pos });
  }
  return fields;
}

/** Payload of a length-delimited field (a view, not a copy). */
export function payload(buf: Uint8Array, f: Field): Uint8Array {
  return buf.subarray(f.valueStart, f.end);
}

/** Whole field (tag + payload) as a view, for verbatim copying. */
export function fieldView(buf: Uint8Array, f: Field): Uint8Array {
  return buf.subarray(f.start, f.end);
}

export function varintField(buf: Uint8Array, f: Field): number {
  if (f.wt !== WT_VARINT) throw new WireError(`field ${f.no} is not a varint`, f.start);
  return readVarint(buf, f.valueStart, f.end).value;
}

const utf8 = new TextDecoder();
export function stringField(buf: Uint8Array, f: Field): string {
  if (f.wt !== WT_LEN) throw new WireError(`field ${f.no} is not length-delimited`, f.start);
  return utf8.decode(payload(buf, f));
}

function varintBytes(value: number): Uint8Array {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Uint8Array.from(out);
}

/**
 * An output message as a list of byte chunks (mostly views into the input model). Nested messages are written by
 * building their ChunkList first, so that the length prefix is known without copying.
 */
export class ChunkList {
  readonly parts: Uint8Array[] = [];
  length = 0;

  push(bytes: Uint8Array): this {
    if (bytes.length > 0) {
      this.parts.push(bytes);
      this.length += bytes.length;
    }
    return this;
  }

  append(other: ChunkList): this {
    for (const p of other.parts) this.push(p);
    return this;
  }

  /** A length-delimited field: tag, length, then the payload's chunks. */
  lenField(no: number, body: ChunkList | Uint8Array): this {
    this.push(varintBytes(no * 8 + WT_LEN));
    this.push(varintBytes(body.length));
    if (body instanceof Uint8Array) this.push(body);
    else this.append(body);
    return this;
  }

  /** The one allocation of the output: exactly `length` bytes. */
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}
