/**
 * Node-only file helpers of the patcher, kept apart so the browser worker bundle never pulls in node:fs.
 */
import { randomBytes } from 'node:crypto';
import { rename, unlink, writeFile, readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
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
  const tmp = join(dirname(outPath), `.${basename(outPath)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, outPath);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new OnnxPatchError('IO_ERROR', `cannot write ${outPath}: ${(err as Error).message}`);
  }
  return report;
}
