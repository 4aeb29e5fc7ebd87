/**
 * The method's two artefacts, checked against the model they are used with (platform-free: the CLI reads the bytes
 * from files in artifacts-node.ts, the lab from IndexedDB or its own model folder):
 *   - a direction: hidden size and layer count must match; it must have been made for this model (model identity,
 *     src/core/model/model-id.ts) unless allowOtherModel; another variant of the same model warns;
 *   - a controller: the same, plus its input layers must be decoder layers of this model.
 * Content ids: a direction is named by its method and a hash of its unit vector (directionId), a controller by a hash
 * of what decides its output (controllerId); a controller records the id of the direction it was trained to drive.
 */
import { decodeController } from '../controller/format.js';
import type { Controller } from '../controller/metadata.js';
import { checkSameModel, type ModelIdentity } from '../model/model-id.js';
import { checkDirectionFits, decodeDirectionFile, type DirectionFile } from '../steering/direction-file.js';
import { sha256Hex } from '../util/sha256.js';
import { methodController, type MethodController } from './flow.js';

/** The model an artefact is used with: its identity and shape (a SteerableModel is one). */
export interface ArtefactTarget {
  identity: ModelIdentity;
  numLayers: number;
  hiddenSize: number;
}

export interface ArtefactOptions {
  /** Accept an artefact made for another model of the same shape (the CLI's --allow-other-model); it then warns. */
  allowOtherModel?: boolean;
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Stable id of a direction: its method and the first 16 hex digits of the SHA-256 of the unit vector's bytes. */
export async function directionId(file: DirectionFile): Promise<string> {
  return `${file.metadata.method}:${(await sha256Hex(bytesOf(file.direction))).slice(0, 16)}`;
}

/**
 * Stable id of a controller: "controller:" and 16 hex digits of the SHA-256 over what decides its prediction and
 * patch (input layers, alpha, standardisation, every weight), not over who it was stamped for, so re-stamping a
 * file with a new model identity keeps its id.
 */
export async function controllerId(c: Controller): Promise<string> {
  const m = c.metadata;
  const head = new TextEncoder().encode(JSON.stringify({ input_layers: m.input_layers, alpha: m.alpha, standardization: m.standardization, hidden_width: m.hidden_width, num_layers: m.num_layers }));
  const p = c.params;
  const parts = [head, bytesOf(p.w1), bytesOf(p.b1), bytesOf(p.w2), bytesOf(p.b2)];
  if (c.standardization) parts.push(bytesOf(c.standardization.mean), bytesOf(c.standardization.std));
  return `controller:${(await sha256Hex(...parts)).slice(0, 16)}`;
}

export interface CheckedDirection {
  file: DirectionFile;
  id: string;
  warnings: string[];
}

/** A decoded direction checked for `model` (see the top of this file). `source` names it in messages. */
export async function checkDirectionFor(file: DirectionFile, model: ArtefactTarget, source: string, opts: ArtefactOptions = {}): Promise<CheckedDirection> {
  const warnings = checkDirectionFits(file, { hiddenSize: model.hiddenSize, numLayers: model.numLayers, modelId: model.identity.id }, source);
  warnings.push(...checkSameModel(file.metadata, model.identity, `direction ${source}`, opts).warnings);
  return { file, id: await directionId(file), warnings };
}

/** Direction file bytes, decoded and checked for `model`. */
export async function directionFromBytes(bytes: Uint8Array, model: ArtefactTarget, source: string, opts: ArtefactOptions = {}): Promise<CheckedDirection> {
  const file = decodeDirectionFile(bytes, { hiddenSize: model.hiddenSize, numLayers: model.numLayers, modelId: model.identity.id }, source);
  return checkDirectionFor(file, model, source, opts);
}

export interface CheckedController {
  controller: Controller;
  method: MethodController;
  id: string;
  warnings: string[];
}

/** Controller file bytes, decoded (shape checked against `model`) and checked to be made for `model`. */
export async function controllerFromBytes(bytes: Uint8Array, model: ArtefactTarget, source: string, opts: ArtefactOptions = {}): Promise<CheckedController> {
  const controller = decodeController(bytes, { expect: { numLayers: model.numLayers, hiddenSize: model.hiddenSize }, source });
  const { warnings } = checkSameModel(controller.metadata, model.identity, `controller ${source}`, opts);
  return { controller, method: methodController(controller), id: await controllerId(controller), warnings };
}

/** A warning when a controller was trained to drive another direction than the one given with it. */
export function directionTieWarning(controller: MethodController | null, directionIdValue: string | null): string | null {
  const tied = controller?.metadata?.direction_id;
  return tied && directionIdValue && tied !== directionIdValue ? `the controller was trained with direction ${tied}, but the direction given is ${directionIdValue}` : null;
}
