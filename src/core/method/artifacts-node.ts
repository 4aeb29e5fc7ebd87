/**
 * Node: the method's artefacts read from files and checked for a model (artifacts.ts does the checks). A missing
 * file is an error naming it.
 */
import { readFile } from 'node:fs/promises';
import { controllerFromBytes, directionFromBytes, directionTieWarning, type ArtefactOptions, type ArtefactTarget, type CheckedController, type CheckedDirection } from './artifacts.js';

async function bytesOf(path: string, what: string): Promise<Uint8Array> {
  try {
    const b = await readFile(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `${what} file ${path} does not exist` : `cannot read ${what} file ${path}: ${(e as Error).message}`);
  }
}

export async function loadDirectionFor(path: string, model: ArtefactTarget, opts: ArtefactOptions = {}): Promise<CheckedDirection> {
  return directionFromBytes(await bytesOf(path, 'direction'), model, path, opts);
}

export async function loadControllerFor(path: string, model: ArtefactTarget, opts: ArtefactOptions = {}): Promise<CheckedController> {
  return controllerFromBytes(await bytesOf(path, 'controller'), model, path, opts);
}

/**
 * A direction and a controller given together (either may be absent), checked for `model`, with every warning
 * (another variant, another model when allowed, a controller trained for another direction).
 */
export async function loadMethodArtefacts(
  paths: { direction?: string | undefined; controller?: string | undefined },
  model: ArtefactTarget,
  opts: ArtefactOptions = {},
): Promise<{ direction: CheckedDirection | null; controller: CheckedController | null; warnings: string[] }> {
  const direction = paths.direction ? await loadDirectionFor(paths.direction, model, opts) : null;
  const controller = paths.controller ? await loadControllerFor(paths.controller, model, opts) : null;
  const warnings = [...(direction?.warnings ?? []), ...(controller?.warnings ?? [])];
  const tie = directionTieWarning(controller?.method ?? null, direction?.id ?? null);
  if (tie) warnings.push(tie);
  return { direction, controller, warnings };
}
