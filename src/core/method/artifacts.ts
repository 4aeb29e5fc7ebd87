/**
 * Loading the method's two artefacts for a given model, refusing ones made for another model (Node):
 * a direction file (hidden size and layer count must match; another model id of the same shape is a warning, e.g. a
 * quantised copy) and a controller file (layers and hidden size must match; another model id is an error unless
 * allowed). A direction's id ties a controller to the direction it was trained to drive.
 */
import { loadControllerFile } from '../controller/node-io.js';
import type { Controller } from '../controller/metadata.js';
import { checkDirectionFits, directionId, type DirectionFile } from '../steering/direction-file.js';
import { readDirectionFile } from '../steering/direction-file-node.js';
import { methodController, type MethodController } from './flow.js';

export interface ModelIdentity {
  id: string;
  numLayers: number;
  hiddenSize: number;
}

export { directionId };

export async function loadDirectionFor(path: string, model: ModelIdentity): Promise<{ file: DirectionFile; id: string; warnings: string[] }> {
  let file: DirectionFile;
  try {
    file = await readDirectionFile(path, { hiddenSize: model.hiddenSize, numLayers: model.numLayers, modelId: model.id });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(`direction file ${path} does not exist`);
    throw e;
  }
  const warnings = checkDirectionFits(file, { hiddenSize: model.hiddenSize, numLayers: model.numLayers, modelId: model.id });
  return { file, id: await directionId(file), warnings };
}

export async function loadControllerFor(
  path: string,
  model: ModelIdentity,
  opts: { allowOtherModelId?: boolean } = {},
): Promise<{ controller: Controller; method: MethodController }> {
  const controller = await loadControllerFile(path, {
    expect: { numLayers: model.numLayers, hiddenSize: model.hiddenSize, modelId: model.id, allowOtherModelId: opts.allowOtherModelId ?? false },
  });
  return { controller, method: methodController(controller) };
}
