/**
 * Node-only file helpers of the patcher, kept apart so the browser worker bundle never pulls in node:fs.
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../util/atomic-write.js';
import { OnnxPatchError } from './patch-error.js';
import { patchDecoder, type PatchOptions, type PatchReport } from './patcher.js';

/** Reads, patches and writes atomically (temp file in the output's folder, then rename); on error writes nothing. */
export async function patchDecoderFile(inPath: string, outPath: string, opts: PatchOptions = {}): Promise<PatchReport> {
  let input: Uint8Array;
  try {
    input = await readFile(inPath);
  } catch (err) {
    throw new OnnxPatchError('IO_ERROR', `cannot read ${inPath}: ${(err as Error).message}`);
  }
  const { bytes, report } = patchDecoder(input, opts);
  try {
    await writeFileAtomic(outPath, bytes);
  } catch (err) {
    throw new OnnxPatchError('IO_ERROR', `cannot write ${outPath}: ${(err as Error).message}`);
  }
  return report;
}
