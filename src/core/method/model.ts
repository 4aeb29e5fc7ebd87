/**
 * Loading the model for the method's commands (Node). A local folder is resolved to an absolute path first, so the
 * model id recorded in directions, controllers and eval records is the same whatever the working directory.
 */
import { statSync } from 'node:fs';
import { basename, isAbsolute, resolve } from 'node:path';
import { loadSteerableModel } from '../model/load.js';
import type { SteerableModel } from '../model/steerable.js';
import type { Device, Dtype, LoadProgress } from '../model/types.js';

export interface ModelSpec {
  model: string;
  dtype?: Dtype;
  device?: Device;
  modelFileName?: string;
  progress?: (p: LoadProgress) => void;
}

export function modelIdOf(idOrPath: string): string {
  try {
    if (statSync(idOrPath).isDirectory()) return resolve(idOrPath);
  } catch {
    // not a local folder: a hub id
  }
  return idOrPath;
}

/**
 * The identity artefacts and records carry: a hub id as given; a local folder by its name (e.g. "organism"), not its
 * absolute path, so files shipped beside a model match it in any checkout and in the browser (which serves the same
 * folder under that name). Hidden size and layer count are still checked on every load of an artefact.
 */
export function modelIdentityOf(idOrPath: string): string {
  const loadPath = modelIdOf(idOrPath);
  return loadPath === idOrPath && !isAbsolute(idOrPath) ? idOrPath : basename(loadPath);
}

export async function loadMethodModel(spec: ModelSpec): Promise<SteerableModel> {
  if (typeof spec.model !== 'string' || spec.model.trim() === '') throw new Error('--model is required: a hub id ("org/name") or a model folder');
  return loadSteerableModel(modelIdOf(spec.model), {
    modelId: modelIdentityOf(spec.model),
    ...(spec.dtype ? { dtype: spec.dtype } : {}),
    ...(spec.device ? { device: spec.device } : {}),
    ...(spec.modelFileName ? { modelFileName: spec.modelFileName } : {}),
    ...(spec.progress ? { progress: spec.progress } : {}),
  });
}
