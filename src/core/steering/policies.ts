/**
 * Steering policies: how (settings, controller prediction, prompt activation, direction) become the steering matrix
 * [numLayers, hiddenSize] that the patched graph adds to the residual stream after each decoder layer (row l after
 * layer l), at every position. `null` means "no patch": the caller runs the model unsteered (or with a zero matrix).
 *
 *   off      null
 *   was      row l = s * w_l * alpha * d                      (Hegazy et al.; s, w from the controller; alpha = 2)
 *   uniform  row l = s * 0.5 * alpha * d                      (the paper's scalar-only ablation: w fixed at 0.5)
 *   manual   row l = scale * w_l * alpha * d, 0 where layer l is switched off  (same formula as WAS, user's s, w)
 *   actadd   row `layer` = coefficient * v (raw diff-in-means vector), other rows 0  (Arditi et al.)
 *   cast     rows in `layers` = strength * b if cos(h, tanh(P h)) passes the threshold, else null  (Lee et al.)
 *
 * How the rows reach the stream (add them, clamp the component along them, or ablate it; which layers and positions;
 * absolute or relative alpha) is a separate, plain-data choice: SteeringSettings in modes.ts, applied to this
 * function's result by applySteeringSettings.
 */
import type { DecoderLayer } from '../model/layer-index.js';
import { castDecision, middleThirdLayers, type CastCondition } from './cast.js';
import { addToRow, checkShape, validateSteeringMatrix, zeroMatrix, type MatrixShape } from './matrix.js';
import { checkVector, norm } from './vector.js';

export const DEFAULT_ALPHA = 2.0;
export const UNIFORM_LAYER_WEIGHT = 0.5;
export const DEFAULT_CAST_STRENGTH = 1.5;

/** The controller's output for one prompt: global scale s (raw) and layer weights w = sigmoid(...) in [0, 1]. */
export interface ControllerPrediction {
  scale: number;
  layerWeights: Float32Array;
}

export type SteeringPolicy =
  | { kind: 'off' }
  | { kind: 'was'; alpha?: number }
  | { kind: 'uniform'; alpha?: number }
  | {
      kind: 'manual';
      scale: number;
      layerWeights: ArrayLike<number>;
      /** Per-layer switch; a layer set to false gets a zero row. Default: all on. */
      enabledLayers?: ArrayLike<boolean>;
      alpha?: number;
    }
  | {
      kind: 'actadd';
      /** The raw (unnormalised) diff-in-means vector [hidden]: its norm is part of the method. */
      vector: Float32Array;
      /** Steering row (output of decoder layer `layer`); a candidate at residual index k maps to row k - 1. */
      layer: DecoderLayer;
      coefficient?: number;
    }
  | {
      kind: 'cast';
      condition: CastCondition;
      /** Vector added when the condition holds; default the context's unit direction. */
      behaviourVector?: Float32Array;
      strength?: number;
      /** Steering rows to add it at; default the middle third of the layers. */
      layers?: readonly DecoderLayer[];
    };

export type PolicyKind = SteeringPolicy['kind'];

/** What a policy needs besides its settings to make the matrix for one prompt. */
export interface PolicyContext {
  numLayers: number;
  hiddenSize: number;
  /** Unit steering direction d [hidden]. */
  direction: Float32Array;
  /** Controller prediction (needed by 'was' and 'uniform'). */
  prediction?: ControllerPrediction;
  /** The prompt's residual at the CAST condition layer (needed by 'cast'). */
  promptActivation?: Float32Array;
}

function checkFinite(x: unknown, what: string): number {
  if (typeof x !== 'number' || !Number.isFinite(x)) throw new RangeError(`${what} must be a finite number, got ${String(x)}`);
  return x;
}

function checkLayer(layer: unknown, numLayers: number, what: string): number {
  if (typeof layer !== 'number' || !Number.isSafeInteger(layer) || layer < 0 || layer >= numLayers) {
    throw new RangeError(`${what} ${String(layer)} is out of range: expected an integer in [0, ${numLayers})`);
  }
  return layer;
}

function checkUnitDirection(d: Float32Array | undefined, hiddenSize: number): Float32Array {
  if (!d) throw new TypeError('the steering context has no direction');
  const v = checkVector(d, hiddenSize, 'steering direction');
  const n = norm(v);
  if (Math.abs(n - 1) > 1e-3) throw new RangeError(`steering direction must be a unit vector, its norm is ${n}`);
  return v;
}

function checkPrediction(p: ControllerPrediction | undefined, numLayers: number, kind: PolicyKind): ControllerPrediction {
  if (!p) throw new TypeError(`the '${kind}' policy needs the controller's prediction (scale and layer weights) in the context`);
  checkFinite(p.scale, "controller's scale");
  if (kind === 'was') {
    const w = checkVector(p.layerWeights, numLayers, "controller's layer weights (one per decoder layer)");
    const bad = w.findIndex((x) => x < 0 || x > 1);
    if (bad >= 0) throw new RangeError(`controller's layer weight ${bad} is ${w[bad]}, expected a sigmoid output in [0, 1]`);
  }
  return p;
}

function checkAlpha(alpha: number | undefined): number {
  return checkFinite(alpha ?? DEFAULT_ALPHA, 'alpha');
}

/**
 * Check a policy's settings against the model's shape, without a prediction or prompt (so the UI can flag bad
 * settings as they are typed). Throws a RangeError/TypeError naming the setting.
 */
export function validatePolicy(policy: SteeringPolicy, shape: MatrixShape): void {
  checkShape(shape);
  const { numLayers, hiddenSize } = shape;
  switch (policy.kind) {
    case 'off':
      return;
    case 'was':
    case 'uniform':
      checkAlpha(policy.alpha);
      return;
    case 'manual': {
      checkAlpha(policy.alpha);
      checkFinite(policy.scale, 'manual scale');
      checkVector(policy.layerWeights, numLayers, 'manual layer weights (one per decoder layer)');
      const en = policy.enabledLayers;
      if (en !== undefined) {
        if (en.length !== numLayers) throw new RangeError(`manual enabled-layer switches: ${en.length} given, expected ${numLayers} (one per decoder layer)`);
        for (let l = 0; l < numLayers; l++) if (typeof en[l] !== 'boolean') throw new TypeError(`manual enabled-layer switch ${l} must be a boolean`);
      }
      return;
    }
    case 'actadd':
      checkVector(policy.vector, hiddenSize, 'ActAdd vector');
      checkLayer(policy.layer, numLayers, 'ActAdd layer');
      checkFinite(policy.coefficient ?? 1, 'ActAdd coefficient');
      return;
    case 'cast': {
      const c = policy.condition;
      if (!c) throw new TypeError("the 'cast' policy needs a condition { vector, layer, threshold, activeWhen }");
      checkVector(c.vector, hiddenSize, 'CAST condition vector');
      if (norm(c.vector) === 0) throw new RangeError('CAST condition vector is zero');
      checkFinite(c.threshold, 'CAST threshold');
      if (c.activeWhen !== 'above' && c.activeWhen !== 'below') throw new RangeError(`CAST activeWhen must be 'above' or 'below', got ${String(c.activeWhen)}`);
      if (typeof c.layer !== 'number' || !Number.isSafeInteger(c.layer) || c.layer < 0) {
        throw new RangeError(`CAST condition layer must be a non-negative integer, got ${String(c.layer)}`);
      }
      if (policy.behaviourVector !== undefined) checkVector(policy.behaviourVector, hiddenSize, 'CAST behaviour vector');
      checkFinite(policy.strength ?? DEFAULT_CAST_STRENGTH, 'CAST strength');
      if (policy.layers !== undefined) {
        if (policy.layers.length === 0) throw new RangeError('CAST layers: the list is empty; give at least one layer or leave it out for the middle third');
        const seen = new Set<number>();
        for (const l of policy.layers) {
          checkLayer(l, numLayers, 'CAST layer');
          if (seen.has(l)) throw new RangeError(`CAST layer ${l} is listed twice`);
          seen.add(l);
        }
      }
      return;
    }
    default:
      throw new RangeError(`unknown steering policy kind ${JSON.stringify((policy as { kind?: unknown }).kind)}`);
  }
}

/** d scaled into every row: row l = coef(l) * d. */
function directionRows(shape: MatrixShape, d: Float32Array, coef: (layer: number) => number): Float32Array {
  const m = zeroMatrix(shape);
  for (let l = 0; l < shape.numLayers; l++) {
    const c = coef(l);
    if (c !== 0) addToRow(m, shape, l, d, c);
  }
  return m;
}

/**
 * The steering matrix for one prompt, float32 [numLayers * hiddenSize] row-major, or null for no patch ('off', or
 * 'cast' when the condition does not hold). Validates the settings and the context, and the result (finite, sized).
 */
export function steeringMatrix(policy: SteeringPolicy, ctx: PolicyContext): Float32Array | null {
  const shape: MatrixShape = { numLayers: ctx.numLayers, hiddenSize: ctx.hiddenSize };
  validatePolicy(policy, shape);
  let m: Float32Array | null;
  switch (policy.kind) {
    case 'off':
      return null;
    case 'was': {
      const d = checkUnitDirection(ctx.direction, ctx.hiddenSize);
      const p = checkPrediction(ctx.prediction, ctx.numLayers, 'was');
      const k = p.scale * checkAlpha(policy.alpha);
      m = directionRows(shape, d, (l) => k * p.layerWeights[l]);
      break;
    }
    case 'uniform': {
      const d = checkUnitDirection(ctx.direction, ctx.hiddenSize);
      const p = checkPrediction(ctx.prediction, ctx.numLayers, 'uniform');
      const k = p.scale * UNIFORM_LAYER_WEIGHT * checkAlpha(policy.alpha);
      m = directionRows(shape, d, () => k);
      break;
    }
    case 'manual': {
      const d = checkUnitDirection(ctx.direction, ctx.hiddenSize);
      const k = policy.scale * checkAlpha(policy.alpha);
      const en = policy.enabledLayers;
      m = directionRows(shape, d, (l) => (en && !en[l] ? 0 : k * policy.layerWeights[l]));
      break;
    }
    case 'actadd': {
      m = zeroMatrix(shape);
      addToRow(m, shape, policy.layer, policy.vector, policy.coefficient ?? 1);
      break;
    }
    case 'cast': {
      if (!ctx.promptActivation) {
        throw new TypeError(`the 'cast' policy needs the prompt's activation at condition layer ${policy.condition.layer} in the context`);
      }
      checkVector(ctx.promptActivation, ctx.hiddenSize, 'CAST prompt activation');
      if (!castDecision(policy.condition, ctx.promptActivation).active) return null;
      const b = policy.behaviourVector ?? checkUnitDirection(ctx.direction, ctx.hiddenSize);
      const strength = policy.strength ?? DEFAULT_CAST_STRENGTH;
      m = zeroMatrix(shape);
      for (const l of policy.layers ?? middleThirdLayers(ctx.numLayers)) addToRow(m, shape, l, b, strength);
      break;
    }
  }
  return validateSteeringMatrix(m, shape, `steering matrix of the '${policy.kind}' policy`);
}
