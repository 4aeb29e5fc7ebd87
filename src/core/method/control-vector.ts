/**
 * The llama.cpp control-vector export, once for the lab and the CLI: a fixed policy's steering rows (manual:
 * s * w_l * alpha * d in row l; actadd: its one row) under the steering settings' layer range and alpha scale,
 * written as a GGUF control vector (steering/gguf.ts). llama.cpp adds each vector at every position and has no
 * projection, so what llama.cpp then does is Steerlab's add mode with steered positions 'all'
 * (test/integration/control-vector-llama.test.ts checks this on llama.cpp itself).
 */
import { applySteeringSettings, DEFAULT_STEERING_SETTINGS, type SteeringSettings } from '../steering/modes.js';
import { encodeControlVector, type ControlVectorExport } from '../steering/gguf.js';
import { steeringMatrix, type SteeringPolicy } from '../steering/policies.js';
import { policyFromSettings, type PolicyArtefacts, type PolicySettings } from './settings.js';

export interface ControlVectorOf extends ControlVectorExport {
  /** The steering matrix the file holds (row 0 included, which llama.cpp cannot take: see `warnings`). */
  matrix: Float32Array;
}

export interface ControlVectorModel {
  numLayers: number;
  hiddenSize: number;
  /** Model name or hub id; its last part, lower case, becomes controlvector.model_hint. */
  name: string;
}

/** controlvector.model_hint from a model name: its last path part, lower case ("HuggingFaceTB/SmolLM2-135M" -> "smollm2-135m"). */
export function controlVectorModelHint(modelName: string): string {
  return modelName.split('/').pop()!.toLowerCase();
}

/**
 * A fixed policy (manual or actadd; `direction` is the manual policy's unit d) as a llama.cpp control vector.
 * Refused, with the reason: policies whose rows depend on the prompt (was, uniform: the controller predicts s and w
 * per prompt; cast: a condition decides per prompt), 'off', and modes other than add (llama.cpp only adds).
 */
export function controlVectorOf(policy: SteeringPolicy, settings: SteeringSettings, direction: Float32Array, model: ControlVectorModel): ControlVectorOf {
  switch (policy.kind) {
    case 'manual':
    case 'actadd':
      break;
    case 'off':
      throw new Error("control vector: policy 'off' steers nothing; use manual (a direction, --scale, --layer-weights) or actadd");
    case 'cast':
      throw new Error("control vector: policy 'cast' steers only the prompts its condition selects, which a control vector (added to every prompt) cannot express; use manual or actadd");
    default:
      throw new Error(`control vector: policy '${policy.kind}' takes s and w from the controller, per prompt; a control vector is one fixed matrix: use manual with the s and w you want`);
  }
  if (settings.mode !== 'add') throw new Error(`control vector: llama.cpp adds its vectors, so only mode 'add' can be exported, got '${settings.mode}'`);
  const shape = { numLayers: model.numLayers, hiddenSize: model.hiddenSize };
  const rows = steeringMatrix(policy, { ...shape, direction });
  const { steering } = applySteeringSettings(rows, settings, shape);
  if (!steering) throw new Error(`control vector: policy '${policy.kind}' gave no steering matrix`);
  return { ...encodeControlVector(steering, { ...shape, modelHint: controlVectorModelHint(model.name) }), matrix: steering };
}

/**
 * The lab's export: the manual policy of its settings (whatever kind is selected) on the active direction, under
 * the playground's steering options (layer range, alpha scale; mode add only).
 */
export function manualControlVector(settings: PolicySettings, artefacts: PolicyArtefacts, model: ControlVectorModel, steering: SteeringSettings = DEFAULT_STEERING_SETTINGS): ControlVectorOf {
  // policyFromSettings refuses the manual policy without a direction
  const policy = policyFromSettings({ ...settings, kind: 'manual' }, artefacts);
  return controlVectorOf(policy, steering, artefacts.direction!.direction, model);
}
