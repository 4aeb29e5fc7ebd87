/**
 * The playground's path from a prompt's activation to the steering matrix, as plain functions the UI and the
 * evaluation runner share:
 *
 *   unsteered residual of the last prompt token [L+1, H]
 *     -> controller input (input layers' rows, concatenated)  -> controller -> (s, w)
 *     -> policy chosen in the UI (off, WAS, uniform, manual, ActAdd, CAST)  -> steering matrix [L, H] or null
 *
 * plus the read-outs the UI draws: per-layer effective weight, row norms, and the heat strip (how far each steered
 * token's residual points along the direction, per layer).
 */
import { decoderLayer } from '../../core/model/layer-index.js';
import {
  castDecision, cosine, rowNorms, steeringMatrix, type CastCondition, type ControllerPrediction, type PolicyKind, type SteeringPolicy,
} from '../../core/steering/index.js';

/** What the UI's controls hold. */
export interface SteeringSettings {
  kind: PolicyKind;
  alpha: number;
  /** Manual mode: scale s, per-layer weights w and switches (start from the controller's prediction). */
  manualScale: number;
  manualWeights: number[];
  manualEnabled: boolean[];
  actaddCoefficient: number;
  castStrength: number;
}

/** The artefacts a policy may need; each is optional and the policy explains what is missing. */
export interface SteeringArtefacts {
  numLayers: number;
  hiddenSize: number;
  /** Unit direction d [H]. */
  direction: Float32Array | null;
  /** Raw diff-in-means vector and its steering row, for ActAdd. */
  actadd: { vector: Float32Array; layer: number } | null;
  /** CAST condition (layer = residual index of the activation compared). */
  cast: CastCondition | null;
  /** Whether a controller is loaded (WAS and uniform need its prediction). */
  hasController: boolean;
}

export const POLICY_LABELS: Record<PolicyKind, string> = {
  off: 'Off (base model)',
  was: 'WAS (controller s, w)',
  uniform: 'Uniform (controller s, w = 0.5)',
  manual: 'Manual (your s, w)',
  actadd: 'ActAdd (raw diff-in-means at one layer)',
  cast: 'CAST (conditional)',
};

export const POLICY_KINDS: readonly PolicyKind[] = ['off', 'was', 'uniform', 'manual', 'actadd', 'cast'];

export function defaultSettings(numLayers: number): SteeringSettings {
  return {
    kind: 'was',
    alpha: 2,
    manualScale: 1,
    manualWeights: Array.from({ length: numLayers }, () => 0.5),
    manualEnabled: Array.from({ length: numLayers }, () => true),
    actaddCoefficient: 1,
    castStrength: 1.5,
  };
}

/** Why a policy cannot run with these artefacts, in words; null when it can. */
export function policyUnavailable(kind: PolicyKind, a: SteeringArtefacts): string | null {
  switch (kind) {
    case 'off':
      return null;
    case 'was':
    case 'uniform':
      if (!a.direction) return 'needs a steering direction (Direction tab)';
      if (!a.hasController) return 'needs a controller (Controller tab: train or load one)';
      return null;
    case 'manual':
      return a.direction ? null : 'needs a steering direction (Direction tab)';
    case 'actadd':
      return a.actadd ? null : 'needs a difference-in-means direction (Direction tab), which carries the raw vector and its layer';
    case 'cast':
      if (!a.cast) return 'needs a CAST condition, fitted when a direction is computed from datasets (Direction tab)';
      return a.direction ? null : 'needs a steering direction (Direction tab)';
  }
}

/** Rows of the input layers' outputs (residual index l + 1) at the last prompt token, concatenated. */
export function controllerFeatures(promptResiduals: Float32Array, inputLayers: readonly number[], numLayers: number, hiddenSize: number): Float32Array {
  if (promptResiduals.length !== (numLayers + 1) * hiddenSize) {
    throw new RangeError(`prompt residuals have ${promptResiduals.length} values, expected (numLayers ${numLayers} + 1) x hidden ${hiddenSize}`);
  }
  const out = new Float32Array(inputLayers.length * hiddenSize);
  inputLayers.forEach((l, i) => {
    if (!Number.isInteger(l) || l < 0 || l >= numLayers) throw new RangeError(`controller input layer ${l} is not in 0..${numLayers - 1}`);
    out.set(promptResiduals.subarray((l + 1) * hiddenSize, (l + 2) * hiddenSize), i * hiddenSize);
  });
  return out;
}

/** The core policy for the UI settings (throws with the reason when it is unavailable). */
export function buildPolicy(s: SteeringSettings, a: SteeringArtefacts): SteeringPolicy {
  const why = policyUnavailable(s.kind, a);
  if (why) throw new Error(`${POLICY_LABELS[s.kind]}: ${why}`);
  switch (s.kind) {
    case 'off':
      return { kind: 'off' };
    case 'was':
      return { kind: 'was', alpha: s.alpha };
    case 'uniform':
      return { kind: 'uniform', alpha: s.alpha };
    case 'manual':
      return { kind: 'manual', scale: s.manualScale, layerWeights: s.manualWeights, enabledLayers: s.manualEnabled, alpha: s.alpha };
    case 'actadd':
      return { kind: 'actadd', vector: a.actadd!.vector, layer: decoderLayer(a.actadd!.layer), coefficient: s.actaddCoefficient };
    case 'cast':
      return { kind: 'cast', condition: a.cast!, strength: s.castStrength };
  }
}

export interface SteeringOutcome {
  policy: PolicyKind;
  /** [L*H] or null (no patch). */
  matrix: Float32Array | null;
  /** Per-layer L2 norm of the matrix rows (zeros when null): the bar chart of what is actually added. */
  rowNorms: Float32Array;
  prediction: ControllerPrediction | null;
  /** CAST: the similarity and whether the gate opened. */
  cast: { similarity: number; active: boolean } | null;
}

/**
 * The steering matrix for one prompt. `promptResiduals` [L+1, H] (unsteered) is needed by CAST; `prediction` by WAS
 * and uniform.
 */
export function steeringFor(
  s: SteeringSettings,
  a: SteeringArtefacts,
  prediction: ControllerPrediction | null,
  promptResiduals: Float32Array | null,
): SteeringOutcome {
  const policy = buildPolicy(s, a);
  const { numLayers: L, hiddenSize: H } = a;
  let cast: SteeringOutcome['cast'] = null;
  let promptActivation: Float32Array | undefined;
  if (policy.kind === 'cast') {
    if (!promptResiduals) throw new Error('CAST needs the prompt activation: observe the prompt first');
    const k = policy.condition.layer;
    if (k < 0 || k > L) throw new RangeError(`CAST condition layer ${k} is not a residual index in 0..${L}`);
    promptActivation = promptResiduals.slice(k * H, (k + 1) * H);
    cast = castDecision(policy.condition, promptActivation);
  }
  if ((policy.kind === 'was' || policy.kind === 'uniform') && !prediction) throw new Error(`${POLICY_LABELS[policy.kind]}: no controller prediction for this prompt`);
  const matrix = steeringMatrix(policy, {
    numLayers: L,
    hiddenSize: H,
    direction: a.direction ?? new Float32Array(H),
    prediction: prediction ?? undefined,
    promptActivation,
  });
  return { policy: policy.kind, matrix, rowNorms: matrix ? rowNorms(matrix, { numLayers: L, hiddenSize: H }) : new Float32Array(L), prediction, cast };
}

/** Manual mode starts from the controller's prediction when there is one, else s = 1, w = 0.5. */
export function manualFromPrediction(p: ControllerPrediction | null, numLayers: number): Pick<SteeringSettings, 'manualScale' | 'manualWeights' | 'manualEnabled'> {
  return {
    manualScale: p ? round(p.scale, 4) : 1,
    manualWeights: Array.from({ length: numLayers }, (_, l) => (p ? round(p.layerWeights[l]!, 4) : 0.5)),
    manualEnabled: Array.from({ length: numLayers }, () => true),
  };
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/**
 * Heat strip: cos(residual after layer l, d) for every generated token t and layer l, float32 [T, L].
 * `tokenResiduals` is the capture [T, L+1, H]; residual index l + 1 is the output of layer l (with its steering row).
 */
export function directionHeat(tokenResiduals: Float32Array, direction: Float32Array, numLayers: number, hiddenSize: number): Float32Array {
  const stride = (numLayers + 1) * hiddenSize;
  if (tokenResiduals.length % stride !== 0) throw new RangeError(`token residuals have ${tokenResiduals.length} values, not a multiple of (L+1) x H = ${stride}`);
  if (direction.length !== hiddenSize) throw new RangeError(`direction has ${direction.length} values, expected hidden ${hiddenSize}`);
  const T = tokenResiduals.length / stride;
  const out = new Float32Array(T * numLayers);
  for (let t = 0; t < T; t++) {
    for (let l = 0; l < numLayers; l++) {
      const start = t * stride + (l + 1) * hiddenSize;
      const c = cosine(tokenResiduals.subarray(start, start + hiddenSize), direction);
      out[t * numLayers + l] = Number.isFinite(c) ? c : 0;
    }
  }
  return out;
}
