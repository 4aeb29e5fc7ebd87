/**
 * Node-only: the skeleton of a local ONNX graph file (src/core/onnx/skeleton.ts) read with positional reads, for a
 * by-reference patch that leaves the weights on disk. Imported dynamically by load.ts (never in a browser bundle).
 */
import fs from 'node:fs';
import { readSkeleton } from '../onnx/skeleton.js';

export function readGraphSkeleton(filePath: string): { bytes: Uint8Array; skippedBytes: number; size: number } {
  const fd = fs.openSync(filePath, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    return { ...readSkeleton(size, (buf, offset, length, position) => fs.readSync(fd, buf, offset, length, position)), size };
  } finally {
    fs.closeSync(fd);
  }
}
