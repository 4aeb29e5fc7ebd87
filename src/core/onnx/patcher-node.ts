/**
 * Node-only file helpers of the patcher, kept apart so the browser worker bundle never pulls in node:fs.
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../util/atomic-write.js';
import { refuseOverwritingInputs } from '../util/same-file-node.js';
import { OnnxPatchError } from './patch-error.js';
import { patchDecoder, type PatchOptions, type PatchReport } from './patcher.js';
import { validateGraph } from './validate.js';

/**
 * Reads, patches and writes atomically (temp file in the output's folder, then rename); on error writes nothing.
 * Refused before anything is written: an output that is the input file itself, an input graph onnxruntime would
 * reject (validate.ts), and, as a last guard, a patched graph that would be rejected.
 */
export async function patchDecoderFile(inPath: string, outPath: string, opts: PatchOptions = {}): Promise<PatchReport> {
  try {
    refuseOverwritingInputs([{ path: outPath, role: 'output' }], [{ path: inPath, role: 'input' }]);
  } catch (err) {
    throw new OnnxPatchError('BAD_OPTIONS', (err as Error).message);
  }
  let input: Uint8Array;
  try {
    input = await readFile(inPath);
  } catch (err) {
    throw new OnnxPatchError('IO_ERROR', `cannot read ${inPath}: ${(err as Error).message}`);
  }
  validateGraph(input, inPath);
  const { bytes, report } = patchDecoder(input, opts);
  validateGraph(bytes, `the patched graph for ${outPath}`);
  try {
    await writeFileAtomic(outPath, bytes);
  } catch (err) {
    throw new OnnxPatchError('IO_ERROR', (err as Error).message); // the atomic writer names outPath and the cause
  }
  return report;
}
