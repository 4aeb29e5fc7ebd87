/**
 * The skeleton of an ONNX file: every byte the patcher reads (model fields, nodes, graph inputs and outputs, tensor
 * headers, small tensors), without the payloads of large raw_data fields (the weights). The result is a buffer of
 * the file's size whose skipped ranges were never read (zero), so offsets stay the file's own: readModel and a
 * by-reference patch (writeModel's byReference) work on it unchanged, while the weights stay on disk for onnxruntime.
 * A 538 MB graph is read as a few hundred KB. Reads go through a positional `read` callback (Node: fs.readSync).
 */
import { readVarint, WireError, WT_I32, WT_I64, WT_LEN, WT_VARINT } from './wire.js';

/** Reads `length` bytes at file `position` into buf[offset..]; returns how many were read. */
export type ReadAt = (buf: Uint8Array, offset: number, length: number, position: number) => number;

const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const TENSOR_RAW_DATA = 9;
/** Payloads at least this large are skipped; smaller tensors (shapes, axes, norms) are read. */
export const SKELETON_SKIP_BYTES = 4096;
/** Read-ahead per read: few syscalls for runs of small fields, little waste when a skipped payload follows. */
const WINDOW = 16 << 10;

export function readSkeleton(size: number, read: ReadAt): { bytes: Uint8Array; skippedBytes: number } {
  const buf = new Uint8Array(size); // untouched pages cost no memory until written
  let loadedFrom = 0;
  let loadedTo = 0;
  let skipped = 0;
  const load = (start: number, end: number) => {
    if (start >= loadedFrom && end <= loadedTo) return;
    const to = Math.min(size, Math.max(end, start + WINDOW));
    let at = start;
    while (at < to) {
      const n = read(buf, at, to - at, at);
      if (n <= 0) throw new WireError(`the file ended at ${at} bytes while reading up to ${to} (size ${size})`, at);
      at += n;
    }
    loadedFrom = start;
    loadedTo = to;
  };
  /** Walks the fields of [start, end); `inner(no)` says which length-delimited fields to descend into or skip. */
  const walk = (start: number, end: number, visit: (no: number, valueStart: number, valueEnd: number) => 'load' | 'done') => {
    let pos = start;
    while (pos < end) {
      load(pos, Math.min(end, pos + 20));
      const tag = readVarint(buf, pos, end);
      const no = Math.floor(tag.value / 8);
      const wt = tag.value % 8;
      let next: number;
      if (wt === WT_LEN) {
        const len = readVarint(buf, tag.next, end);
        if (len.value > end - len.next) throw new WireError(`field ${no} declares ${len.value} bytes but only ${end - len.next} remain`, pos);
        next = len.next + len.value;
        if (visit(no, len.next, next) === 'load') load(pos, next);
      } else if (wt === WT_VARINT) {
        next = readVarint(buf, tag.next, end).next;
      } else if (wt === WT_I64 || wt === WT_I32) {
        next = tag.next + (wt === WT_I64 ? 8 : 4);
        load(pos, next);
      } else {
        throw new WireError(`unsupported wire type ${wt} for field ${no}`, pos);
      }
      if (next > end) throw new WireError(`field ${no} runs past the end of its message`, pos);
      pos = next;
    }
  };
  const tensor = (no: number, s: number, e: number): 'load' | 'done' => {
    if (no === TENSOR_RAW_DATA && e - s >= SKELETON_SKIP_BYTES) {
      skipped += e - s;
      return 'done';
    }
    return 'load';
  };
  const graph = (no: number, s: number, e: number): 'load' | 'done' => {
    if (no !== GRAPH_INITIALIZER || e - s < SKELETON_SKIP_BYTES) return 'load';
    walk(s, e, tensor);
    return 'done';
  };
  walk(0, size, (no, s, e) => {
    if (no !== MODEL_GRAPH) return 'load';
    walk(s, e, graph);
    return 'done';
  });
  return { bytes: buf, skippedBytes: skipped };
}
