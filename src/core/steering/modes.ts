/**
 * Steering settings: HOW a policy's rows reach the residual stream, as one plain-data object (JSON as it is, so eval
 * records, summaries and sweeps can carry it):
 *
 *   mode       'add'    (default, the paper) the residual after layer l becomes x + r_l
 *              'clamp'  the component along r_l is SET to |r_l|: x - (x.u_l)u_l + r_l with u_l = r_l / |r_l|; for the
 *                       direction policies r_l = c_l d, so x.d becomes c_l (per layer, per position)
 *              'ablate' directional ablation (Arditi et al.): x - (x.u_l)u_l, no addition; u_l = r_l / |r_l|
 *              A layer whose row is zero (outside the policy's layers, switched off, or outside `layers`) is left
 *              alone in every mode. clamp and ablate use the graph's `projection` input.
 *   layers     decoder layers [first, last] (inclusive) that may be steered; rows outside are zeroed. null = all.
 *   positions  'last' (default): the last prompt token and the new tokens; 'all': every prompt position too;
 *              'new': the new tokens only.
 *   alpha      'absolute' (default): the policy's alpha as it is (the paper: row l = s w_l alpha d);
 *              'relative': row l is also multiplied by n_l, the mean norm of the UNSTEERED residual after layer l at
 *              the last prompt token over a calibration prompt set (residualNorms in src/core/method/norms.ts), so
 *              alpha is a fraction of each layer's typical residual size. The norms and how they were measured are
 *              part of the settings (calibration), so a record says exactly what alpha meant.
 *
 * Relative alpha applies to the policies whose strength is a scalar on a unit direction (was, uniform, manual, cast);
 * actadd adds a raw vector whose norm is the method, so it refuses 'relative'.
 */
import { checkShape, type MatrixShape } from './matrix.js';
import type { PolicyKind } from './policies.js';

export const STEERING_MODES = ['add', 'clamp', 'ablate'] as const;
export type SteeringMode = (typeof STEERING_MODES)[number];
export const STEER_POSITIONS = ['last', 'all', 'new'] as const;
export type SteerPositions = (typeof STEER_POSITIONS)[number];

/** Mean residual norms per decoder layer and how they were measured. */
export interface ResidualNormCalibration {
  /** norms[l] = mean over the prompts of ||residual after decoder layer l|| (residual index l+1), unsteered. */
  norms: number[];
  /** Where the norm was read: the last token of the chat-formatted prompt with the generation prompt. */
  position: 'last-prompt-token';
  /** The calibration prompt set (dataset name or file) and how many prompts. */
  set: string;
  n: number;
  model_id: string;
}

export interface SteeringSettings {
  mode: SteeringMode;
  /** Inclusive decoder-layer range; null = every layer the policy writes. */
  layers: { first: number; last: number } | null;
  positions: SteerPositions;
  alpha: { scale: 'absolute' } | { scale: 'relative'; calibration: ResidualNormCalibration };
}

export const DEFAULT_STEERING_SETTINGS: SteeringSettings = Object.freeze({
  mode: 'add',
  layers: null,
  positions: 'last',
  alpha: Object.freeze({ scale: 'absolute' }),
}) as SteeringSettings;

/** What the graph receives for one prompt: the steering rows and the projection rows (null = none). */
export interface ModePatch {
  steering: Float32Array | null;
  projection: Float32Array | null;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Checks a settings object (e.g. read back from JSON) against the model's shape and the policy; throws a RangeError
 * or TypeError naming the field and what was expected. Returns it typed.
 */
export function validateSteeringSettings(raw: unknown, shape: MatrixShape, policy?: PolicyKind): SteeringSettings {
  checkShape(shape);
  if (!isObj(raw)) throw new TypeError('steering settings must be an object { mode, layers, positions, alpha }');
  if (!(STEERING_MODES as readonly unknown[]).includes(raw.mode)) throw new RangeError(`steering mode must be one of ${STEERING_MODES.join(', ')}, got ${JSON.stringify(raw.mode)}`);
  if (!(STEER_POSITIONS as readonly unknown[]).includes(raw.positions)) {
    throw new RangeError(`steered positions must be one of ${STEER_POSITIONS.join(', ')}, got ${JSON.stringify(raw.positions)}`);
  }
  const L = shape.numLayers;
  if (raw.layers !== null) {
    if (!isObj(raw.layers)) throw new TypeError('steering layers must be null (all) or { first, last }');
    const { first, last } = raw.layers;
    for (const [k, v] of [['first', first], ['last', last]] as const) {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v >= L) throw new RangeError(`steering layers.${k} must be a decoder layer in 0..${L - 1}, got ${JSON.stringify(v)}`);
    }
    if ((first as number) > (last as number)) throw new RangeError(`steering layers: first ${first} is after last ${last}`);
  }
  const a = raw.alpha;
  if (!isObj(a) || (a.scale !== 'absolute' && a.scale !== 'relative')) throw new RangeError(`steering alpha must be { scale: 'absolute' } or { scale: 'relative', calibration }, got ${JSON.stringify(a)}`);
  if (a.scale === 'relative') {
    const c = a.calibration;
    if (!isObj(c)) throw new TypeError('relative alpha needs its calibration { norms, position, set, n, model_id }');
    if (!Array.isArray(c.norms) || c.norms.length !== L) throw new RangeError(`relative alpha: calibration.norms must hold ${L} values (one per decoder layer), got ${Array.isArray(c.norms) ? c.norms.length : typeof c.norms}`);
    c.norms.forEach((n, l) => {
      if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) throw new RangeError(`relative alpha: calibration norm of layer ${l} is ${n}; expected a positive number`);
    });
    if (c.position !== 'last-prompt-token') throw new RangeError(`relative alpha: calibration.position must be 'last-prompt-token', got ${JSON.stringify(c.position)}`);
    if (typeof c.set !== 'string' || !Number.isSafeInteger(c.n) || (c.n as number) < 1 || typeof c.model_id !== 'string') {
      throw new TypeError('relative alpha: calibration needs set (string), n (count >= 1) and model_id (string)');
    }
    if (policy === 'actadd') throw new RangeError("relative alpha does not apply to the 'actadd' policy: it adds a raw vector whose norm is part of the method");
  }
  return raw as unknown as SteeringSettings;
}

/** The settings as JSON-ready plain data (a deep copy; records and summaries store this). */
export function settingsRecord(s: SteeringSettings): SteeringSettings {
  return JSON.parse(JSON.stringify(s)) as SteeringSettings;
}

/**
 * A policy's rows [L*H] (null = no patch) under the settings: layer range, relative alpha, then the mode. Never
 * changes `rows`. Zero rows stay untouched in every mode.
 */
export function applySteeringSettings(rows: Float32Array | null, settings: SteeringSettings, shape: MatrixShape): ModePatch {
  checkShape(shape);
  const { numLayers: L, hiddenSize: H } = shape;
  if (rows === null) return { steering: null, projection: null };
  if (rows.length !== L * H) throw new RangeError(`steering rows have ${rows.length} values, expected ${L} x ${H}`);
  const out = Float32Array.from(rows);
  const range = settings.layers;
  const norms = settings.alpha.scale === 'relative' ? settings.alpha.calibration.norms : null;
  for (let l = 0; l < L; l++) {
    const inRange = !range || (l >= range.first && l <= range.last);
    const k = !inRange ? 0 : norms ? norms[l]! : 1;
    if (k !== 1) for (let h = 0; h < H; h++) out[l * H + h]! *= k;
  }
  if (settings.mode === 'add') return { steering: out, projection: null };
  const projection = new Float32Array(L * H);
  for (let l = 0; l < L; l++) {
    let ss = 0;
    for (let h = 0; h < H; h++) ss += out[l * H + h]! * out[l * H + h]!;
    const n = Math.sqrt(ss);
    if (n === 0) continue;
    for (let h = 0; h < H; h++) projection[l * H + h] = out[l * H + h]! / n;
  }
  return { steering: settings.mode === 'clamp' ? out : null, projection };
}
