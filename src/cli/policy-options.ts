/**
 * `--policy` and its settings, shared by every command that steers (lab generate, lab eval's building blocks):
 *
 *   --policy off|was|uniform|manual|actadd|cast      (default off)
 *   --direction FILE        unit direction d (was, uniform, manual, cast's behaviour vector; actadd's vector)
 *   --controller FILE       trained controller (was, uniform)
 *   --alpha X               patch strength (default: the controller's alpha, else 2.0)
 *   --scale S               manual: global scale s
 *   --layer-weights LIST    manual: w per layer, comma-separated (one value = every layer)
 *   --enabled-layers LIST   manual: only these layers are steered (others get a zero row)
 *   --coefficient C         actadd: coefficient (default 1)
 *   --actadd-layer L        actadd: steering row (default the direction file's layer)
 *   --cast FILE             cast: JSON {vector | "direction", layer (residual index), threshold, activeWhen, strength?, layers?}
 *   --mode add|clamp|ablate how the policy's rows reach the stream (default add; clamp and ablate: projection input)
 *   --layer-range A-B       steer only decoder layers A..B (inclusive)
 *   --alpha-scale absolute|relative   relative: alpha is a fraction of each layer's mean residual norm, measured on
 *                           --norm-set (default harmless-train) x --norm-n (default 32) prompts
 *
 * resolvePolicyOptions() loads the files (refusing ones made for another model) and returns what runFlow needs.
 */
import { decoderLayer, decoderLayers, residualIndex } from '../core/model/layer-index.js';
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { ArtefactTarget } from '../core/method/artifacts.js';
import { loadMethodArtefacts } from '../core/method/artifacts-node.js';
import type { CastSettings, ManualSettings } from '../core/method/conditions.js';
import type { MethodController } from '../core/method/flow.js';
import type { DirectionFile } from '../core/steering/direction-file.js';
import { DEFAULT_ALPHA, validatePolicy, type SteeringPolicy } from '../core/steering/policies.js';
import { decodeUtf8 } from '../core/util/utf8.js';
import { parseCountOption, parseSeedOption, parseStrength } from './numbers.js';
import { STEERING_MODES, STEER_POSITIONS, validateSteeringSettings, type SteeringMode, type SteeringSettings, type SteerPositions } from '../core/steering/modes.js';
import { loadPromptSet, pick } from '../core/method/datasets.js';
import { residualNorms } from '../core/method/norms.js';
import type { SteerableModel } from '../core/model/steerable.js';

export const POLICY_KINDS = ['off', 'was', 'uniform', 'manual', 'actadd', 'cast'] as const;

export interface PolicyCliOptions {
  policy?: string;
  direction?: string;
  controller?: string;
  alpha?: string;
  scale?: string;
  layerWeights?: string;
  enabledLayers?: string;
  coefficient?: string;
  actaddLayer?: string;
  cast?: string;
  mode?: string;
  layerRange?: string;
  alphaScale?: string;
  normSet?: string;
  normN?: string;
  allowOtherModel?: boolean;
}

export const DEFAULT_NORM_SET = 'harmless-train';
export const DEFAULT_NORM_N = 32;

export function addPolicyOptions(cmd: Command): Command {
  return cmd
    .option('--policy <kind>', `steering policy: ${POLICY_KINDS.join(' | ')}`, 'off')
    .option('--direction <file>', 'direction file (.safetensors) made by lab direction')
    .option('--controller <file>', 'controller file made by lab train-controller')
    .option('--alpha <x>', `patch strength alpha (default: the controller's, else ${DEFAULT_ALPHA})`)
    .option('--scale <s>', 'manual policy: global scale s')
    .option('--layer-weights <list>', 'manual policy: layer weights, comma-separated, or one value for every layer')
    .option('--enabled-layers <list>', 'manual policy: steer only these layers (comma-separated indices)')
    .option('--coefficient <c>', 'actadd policy: coefficient (default 1)')
    .option('--actadd-layer <l>', "actadd policy: steering row (default: the direction file's layer)")
    .option('--cast <file>', 'cast policy: JSON settings {vector|"direction", layer, threshold, activeWhen, strength?, layers?}')
    .option(
      '--mode <mode>',
      `how the policy's rows r_l reach the residual after layer l: ${STEERING_MODES.join(' | ')} (default add). add: x + r_l (the paper); ` +
        'clamp: set the component along r_l to |r_l| (x - (x.u)u + r_l, u = r_l/|r_l|; for was/uniform/manual the component along d becomes s*w_l*alpha); ' +
        "ablate: remove the component along r_l (x - (x.u)u; Arditi's directional ablation, which suppresses refusal)",
    )
    .option('--layer-range <a-b>', 'steer only decoder layers a..b (inclusive, 0-based), e.g. 2-4; default all')
    .option('--alpha-scale <scale>', `absolute (default: alpha as given) | relative (row l also x the mean norm of the unsteered residual after layer l at the last prompt token, over --norm-set; alpha is then a fraction of it, e.g. 0.2)`)
    .option('--norm-set <dataset>', `relative alpha: calibration prompts for the residual norms (default ${DEFAULT_NORM_SET})`)
    .option('--norm-n <n>', `relative alpha: how many calibration prompts (default ${DEFAULT_NORM_N}, seed 0)`)
    .option('--allow-other-model', 'accept a direction or controller made for another model of the same shape (it then warns)');
}

/** "a-b" (or one layer "a") -> inclusive decoder-layer range. */
export function parseLayerRange(v: string, numLayers: number): { first: number; last: number } {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(v);
  if (!m) throw new Error(`--layer-range must be FIRST-LAST (decoder layers, inclusive, 0-based) or one layer, got "${v}"`);
  const first = Number(m[1]);
  const last = m[2] !== undefined ? Number(m[2]) : first;
  if (last >= numLayers) throw new Error(`--layer-range ${v}: layer ${last} is out of range, the model has layers 0..${numLayers - 1}`);
  if (first > last) throw new Error(`--layer-range ${v}: first layer ${first} is after last layer ${last}`);
  return { first, last };
}

/** The policy's numbers (--alpha, --scale, --coefficient), checked before the model loads (resolvePolicyOptions reads them again after). */
export function checkPolicyNumbers(o: Pick<PolicyCliOptions, 'alpha' | 'scale' | 'coefficient'>): void {
  if (o.alpha !== undefined) parseStrength('alpha', o.alpha);
  if (o.scale !== undefined) parseStrength('scale', o.scale);
  if (o.coefficient !== undefined) parseStrength('coefficient', o.coefficient);
}

/**
 * The steering-settings flags that need no model (--mode, positions, --alpha-scale, --norm-set / --norm-n), checked
 * before the model loads; resolveSteeringSettings checks them again with the model (layer range, relative alpha).
 */
export function checkSteeringFlags(o: PolicyCliOptions, positions: string): { mode: SteeringMode; positions: SteerPositions; scale: 'absolute' | 'relative'; normN: number } {
  const mode = o.mode ?? 'add';
  if (!(STEERING_MODES as readonly string[]).includes(mode)) throw new Error(`--mode must be one of ${STEERING_MODES.join(', ')}, got "${mode}"`);
  if (!(STEER_POSITIONS as readonly string[]).includes(positions)) throw new Error(`steered positions must be one of ${STEER_POSITIONS.join(', ')}, got "${positions}"`);
  const scale = o.alphaScale ?? 'absolute';
  if (scale !== 'absolute' && scale !== 'relative') throw new Error(`--alpha-scale must be absolute or relative, got "${scale}"`);
  if (scale === 'absolute' && (o.normSet !== undefined || o.normN !== undefined)) throw new Error('--norm-set / --norm-n only apply with --alpha-scale relative');
  const normN = o.normN !== undefined ? parseCount('norm-n', o.normN) : DEFAULT_NORM_N;
  return { mode: mode as SteeringMode, positions: positions as SteerPositions, scale, normN };
}

/**
 * --mode, --layer-range, --alpha-scale (+ --norm-set, --norm-n) and the positions into a SteeringSettings object;
 * relative alpha measures the residual norms on the model now (one unsteered forward per calibration prompt).
 */
export async function resolveSteeringSettings(
  o: PolicyCliOptions,
  positions: string,
  model: SteerableModel,
  policyKind: SteeringPolicy['kind'] | null,
  onProgress?: (done: number, total: number) => void,
): Promise<SteeringSettings> {
  const flags = checkSteeringFlags(o, positions);
  let alpha: SteeringSettings['alpha'] = { scale: 'absolute' };
  if (flags.scale === 'relative') {
    if (policyKind === null) throw new Error('--alpha-scale relative needs a --policy (a fixed --steering matrix has no alpha to scale)');
    const set = o.normSet ?? DEFAULT_NORM_SET;
    const n = flags.normN;
    const loaded = await loadPromptSet({ source: set });
    const prompts = pick(loaded.prompts, n, 0).map((p) => p.text);
    alpha = { scale: 'relative', calibration: await residualNorms(model, prompts, { set, ...(onProgress ? { onProgress } : {}) }) };
  }
  const settings: SteeringSettings = {
    mode: flags.mode,
    layers: o.layerRange !== undefined ? parseLayerRange(o.layerRange, model.numLayers) : null,
    positions: flags.positions,
    alpha,
  };
  return validateSteeringSettings(settings, { numLayers: model.numLayers, hiddenSize: model.hiddenSize }, policyKind ?? undefined);
}

export function parseNumber(flag: string, v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new Error(`--${flag} must be a number, got "${v}"`);
  return n;
}

export function parseIndex(flag: string, v: string, limit: number): number {
  if (!/^\d+$/.test(v.trim())) throw new Error(`--${flag} must be a layer index in 0..${limit - 1}, got "${v}"`);
  const n = Number(v);
  if (n >= limit) throw new Error(`--${flag} ${n} is out of range: expected 0..${limit - 1}`);
  return n;
}

/** A whole number >= 1 (counts of prompts, tokens, epochs...): numbers.ts. */
export const parseCount = parseCountOption;

/** Seeds: integers in [0, 2^32) (numbers.ts). */
export const parseSeed = (v: string): number => parseSeedOption(v);

export function parseNumberList(flag: string, v: string): number[] {
  const parts = v.split(',').map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === '')) throw new Error(`--${flag} must be a comma-separated list of numbers, got "${v}"`);
  return parts.map((p) => parseStrength(flag, p));
}

/**
 * --scale / --layer-weights / --enabled-layers: the manual policy's (and eval's manual condition's) settings for a
 * model of numLayers layers; null when no --scale is given (then the other two must be absent too).
 */
export function parseManualSettings(o: Pick<PolicyCliOptions, 'scale' | 'layerWeights' | 'enabledLayers'>, numLayers: number): ManualSettings | null {
  if (o.scale === undefined) {
    if (o.layerWeights !== undefined || o.enabledLayers !== undefined) throw new Error('--layer-weights / --enabled-layers set the manual steering: give --scale S too');
    return null;
  }
  const w = o.layerWeights !== undefined ? parseNumberList('layer-weights', o.layerWeights) : [1];
  if (w.length !== 1 && w.length !== numLayers) throw new Error(`--layer-weights: ${w.length} values given, expected 1 or ${numLayers} (one per layer)`);
  const layerWeights = w.length === 1 ? new Array<number>(numLayers).fill(w[0]!) : w;
  let enabledLayers: boolean[] | undefined;
  if (o.enabledLayers !== undefined) {
    const on = o.enabledLayers.split(',').map((x) => parseIndex('enabled-layers', x, numLayers));
    enabledLayers = Array.from({ length: numLayers }, (_, l) => on.includes(l));
  }
  return { scale: parseStrength('scale', o.scale), layerWeights, ...(enabledLayers ? { enabledLayers } : {}) };
}

/** A CAST settings file. `vector: "direction"` uses the direction as condition vector. */
export async function readCastSettings(path: string, model: { numLayers: number; hiddenSize: number }, direction: DirectionFile | null): Promise<CastSettings> {
  let raw: unknown;
  try {
    raw = JSON.parse(decodeUtf8(await readFile(path), path));
  } catch (e) {
    throw new Error(`--cast ${path}: cannot read JSON settings: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`--cast ${path}: expected a JSON object`);
  const o = raw as Record<string, unknown>;
  let vector: Float32Array;
  if (o.vector === 'direction') {
    if (!direction) throw new Error(`--cast ${path}: vector "direction" needs --direction`);
    vector = direction.direction;
  } else if (Array.isArray(o.vector) && o.vector.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    vector = Float32Array.from(o.vector as number[]);
  } else throw new Error(`--cast ${path}: "vector" must be an array of ${model.hiddenSize} numbers or "direction"`);
  if (vector.length !== model.hiddenSize) throw new Error(`--cast ${path}: "vector" has ${vector.length} values, the model's hidden size is ${model.hiddenSize}`);
  if (!Number.isSafeInteger(o.layer) || (o.layer as number) < 0 || (o.layer as number) > model.numLayers) {
    throw new Error(`--cast ${path}: "layer" must be a residual index in 0..${model.numLayers}, got ${JSON.stringify(o.layer)}`);
  }
  if (typeof o.threshold !== 'number' || !Number.isFinite(o.threshold)) throw new Error(`--cast ${path}: "threshold" must be a number`);
  if (o.activeWhen !== 'above' && o.activeWhen !== 'below') throw new Error(`--cast ${path}: "activeWhen" must be "above" or "below"`);
  if (o.strength !== undefined && (typeof o.strength !== 'number' || !Number.isFinite(o.strength))) throw new Error(`--cast ${path}: "strength" must be a number`);
  if (o.layers !== undefined && !(Array.isArray(o.layers) && o.layers.every((l) => Number.isSafeInteger(l)))) throw new Error(`--cast ${path}: "layers" must be an array of layer indices`);
  return {
    condition: { vector, layer: residualIndex(o.layer as number, model.numLayers), threshold: o.threshold, activeWhen: o.activeWhen },
    ...(o.strength !== undefined ? { strength: o.strength as number } : {}),
    ...(o.layers !== undefined ? { layers: decoderLayers(o.layers as number[]) } : {}),
  };
}

export interface ResolvedPolicy {
  policy: SteeringPolicy;
  /** Unit direction for runFlow (null when none was given). */
  direction: Float32Array | null;
  directionFile: DirectionFile | null;
  directionId: string | null;
  controller: MethodController | null;
  controllerId: string | null;
  warnings: string[];
}

/** Loads --direction / --controller for `model` and turns --policy and its settings into a policy. */
export async function resolvePolicyOptions(o: PolicyCliOptions, model: ArtefactTarget): Promise<ResolvedPolicy> {
  const kind = o.policy ?? 'off';
  if (!(POLICY_KINDS as readonly string[]).includes(kind)) throw new Error(`--policy must be one of ${POLICY_KINDS.join(', ')}, got "${kind}"`);
  const art = await loadMethodArtefacts(o, model, { allowOtherModel: o.allowOtherModel === true });
  const warnings = [...art.warnings];
  const directionFile: DirectionFile | null = art.direction?.file ?? null;
  const directionIdValue = art.direction?.id ?? null;
  const controller: MethodController | null = art.controller?.method ?? null;
  const controllerIdValue = art.controller?.id ?? null;
  const alpha = o.alpha !== undefined ? parseStrength('alpha', o.alpha) : (controller?.metadata?.alpha ?? DEFAULT_ALPHA);
  const L = model.numLayers;
  let policy: SteeringPolicy;
  switch (kind) {
    case 'off':
      policy = { kind: 'off' };
      break;
    case 'was':
    case 'uniform':
      if (!controller) throw new Error(`--policy ${kind} needs --controller FILE (train one with lab train-controller)`);
      if (!directionFile) throw new Error(`--policy ${kind} needs --direction FILE (the direction the controller drives)`);
      policy = { kind, alpha };
      break;
    case 'manual': {
      if (!directionFile) throw new Error('--policy manual needs --direction FILE');
      if (o.scale === undefined) throw new Error('--policy manual needs --scale S');
      const m = parseManualSettings(o, L)!;
      policy = { kind: 'manual', scale: m.scale, layerWeights: m.layerWeights, alpha, ...(m.enabledLayers ? { enabledLayers: m.enabledLayers } : {}) };
      break;
    }
    case 'actadd': {
      if (!directionFile) throw new Error('--policy actadd needs --direction FILE (a diff-in-means direction carries its raw vector and layer)');
      const layerFromFile = directionFile.metadata.layer;
      if (o.actaddLayer === undefined && layerFromFile === undefined) throw new Error('--policy actadd needs --actadd-layer L (the direction file names no layer)');
      const layer = o.actaddLayer !== undefined ? decoderLayer(parseIndex('actadd-layer', o.actaddLayer, L)) : layerFromFile!;
      policy = {
        kind: 'actadd',
        vector: directionFile.rawDirection ?? directionFile.direction,
        layer,
        coefficient: o.coefficient !== undefined ? parseStrength('coefficient', o.coefficient) : 1,
      };
      break;
    }
    default: {
      if (!o.cast) throw new Error('--policy cast needs --cast FILE');
      const c = await readCastSettings(o.cast, model, directionFile);
      if (!directionFile) throw new Error('--policy cast needs --direction FILE (the behaviour vector)');
      policy = { kind: 'cast', condition: c.condition, ...(c.strength !== undefined ? { strength: c.strength } : {}), ...(c.layers ? { layers: c.layers } : {}) };
    }
  }
  validatePolicy(policy, { numLayers: L, hiddenSize: model.hiddenSize });
  return { policy, direction: directionFile?.direction ?? null, directionFile, directionId: directionIdValue, controller, controllerId: controllerIdValue, warnings };
}
