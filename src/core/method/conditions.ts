/**
 * Named evaluation conditions: what each name means as a steering policy, and what it needs.
 *
 *   base     no patch (the model as shipped, same chat template)
 *   was      row l = s * w_l * alpha * d          (controller + direction; the paper's method)
 *   uniform  row l = s * 0.5 * alpha * d          (controller + direction; the paper's scalar-only ablation)
 *   manual   row l = scale * w_l * alpha * d, 0 where layer l is switched off  (direction + the user's s, w, switches)
 *   actadd   raw diff-in-means vector at its layer, coefficient +1  (a diff-in-means direction file)
 *   cast     behaviour vector at the middle layers when the prompt's similarity passes the threshold
 *            (a CAST settings file; see policy-options)
 *
 * alpha defaults to the controller's own alpha (what it was trained for), else 2.0. These names are the one
 * vocabulary of CLI and lab runs ('base', never 'off').
 */
import type { DecoderLayer } from '../model/layer-index.js';
import type { CastCondition } from '../steering/cast.js';
import type { DirectionFile } from '../steering/direction-file.js';
import { DEFAULT_ALPHA, type SteeringPolicy } from '../steering/policies.js';
import { sha256Hex } from '../util/sha256.js';
import type { MethodController } from './flow.js';

export const CONDITION_NAMES = ['base', 'was', 'uniform', 'manual', 'actadd', 'cast'] as const;
export type ConditionName = (typeof CONDITION_NAMES)[number];

export interface EvalCondition {
  name: ConditionName;
  policy: SteeringPolicy;
}

export interface CastSettings {
  condition: CastCondition;
  strength?: number;
  /** Steering rows the behaviour vector is added at (default: the middle third). */
  layers?: DecoderLayer[];
  behaviourVector?: Float32Array;
}

/** The manual condition's settings: the user's global scale s, layer weights w (one per layer) and switches. */
export interface ManualSettings {
  scale: number;
  layerWeights: readonly number[];
  /** Per-layer switch; false = zero row. Absent = every layer on. */
  enabledLayers?: readonly boolean[];
}

export interface ConditionParts {
  direction?: DirectionFile | null;
  controller?: MethodController | null;
  cast?: CastSettings | null;
  manual?: ManualSettings | null;
  /** Overrides the controller's alpha for was / uniform. */
  alpha?: number;
}

/** Split and check a comma list of condition names (order kept, duplicates refused). */
export function parseConditionList(list: string): ConditionName[] {
  const names = list.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (names.length === 0) throw new Error(`--conditions: expected a comma-separated list of ${CONDITION_NAMES.join(', ')}`);
  const seen = new Set<string>();
  for (const n of names) {
    if (!(CONDITION_NAMES as readonly string[]).includes(n)) throw new Error(`unknown condition '${n}': expected one of ${CONDITION_NAMES.join(', ')}`);
    if (seen.has(n)) throw new Error(`condition '${n}' is listed twice`);
    seen.add(n);
  }
  return names as ConditionName[];
}

/**
 * The alpha a run's conditions use (was, uniform and manual share one), or null when none of them has an alpha: what
 * run.json records, from the CLI and the lab alike, so a run resumes whichever of them made it.
 */
export function conditionsAlpha(conditions: readonly EvalCondition[]): number | null {
  for (const c of conditions) if ('alpha' in c.policy && typeof c.policy.alpha === 'number') return c.policy.alpha;
  return null;
}

export function resolveCondition(name: ConditionName, parts: ConditionParts): EvalCondition {
  const alpha = parts.alpha ?? parts.controller?.metadata?.alpha ?? DEFAULT_ALPHA;
  switch (name) {
    case 'base':
      return { name, policy: { kind: 'off' } };
    case 'was':
    case 'uniform':
      if (!parts.controller) throw new Error(`condition '${name}' needs --controller FILE (a controller trained with 'lab train-controller')`);
      if (!parts.direction) throw new Error(`condition '${name}' needs --direction FILE (the direction the controller drives)`);
      return { name, policy: { kind: name, alpha } };
    case 'manual': {
      const m = parts.manual;
      if (!m) throw new Error("condition 'manual' needs its settings: a scale s and layer weights (CLI: --scale S --layer-weights LIST [--enabled-layers LIST])");
      if (!parts.direction) throw new Error("condition 'manual' needs --direction FILE (the direction the patch adds)");
      return { name, policy: { kind: 'manual', scale: m.scale, layerWeights: [...m.layerWeights], alpha, ...(m.enabledLayers ? { enabledLayers: [...m.enabledLayers] } : {}) } };
    }
    case 'actadd': {
      const f = parts.direction;
      if (!f) throw new Error("condition 'actadd' needs --direction FILE made by 'lab direction --method diff-in-means'");
      if (f.metadata.method !== 'diff-in-means' || !f.rawDirection || f.metadata.layer === undefined) {
        throw new Error(`condition 'actadd' needs a diff-in-means direction (raw vector and layer); the given direction was made by '${f.metadata.method}'`);
      }
      return { name, policy: { kind: 'actadd', vector: f.rawDirection, layer: f.metadata.layer, coefficient: 1 } };
    }
    case 'cast': {
      const c = parts.cast;
      if (!c) throw new Error("condition 'cast' needs --cast FILE (JSON: vector, layer, threshold, activeWhen, optional strength, layers)");
      if (!c.behaviourVector && !parts.direction) throw new Error("condition 'cast' needs --direction FILE (the behaviour vector) or a behaviourVector in the CAST file");
      return {
        name,
        policy: {
          kind: 'cast',
          condition: c.condition,
          ...(c.behaviourVector ? { behaviourVector: c.behaviourVector } : {}),
          ...(c.strength !== undefined ? { strength: c.strength } : {}),
          ...(c.layers ? { layers: c.layers } : {}),
        },
      };
    }
  }
}

export function resolveConditions(names: readonly ConditionName[], parts: ConditionParts): EvalCondition[] {
  return names.map((n) => resolveCondition(n, parts));
}

/** Content id of CAST settings ("cast:" + 16 hex digits): what run.json records instead of a file's path. */
export async function castId(c: CastSettings): Promise<string> {
  const f = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const head = new TextEncoder().encode(JSON.stringify({ layer: c.condition.layer, threshold: c.condition.threshold, activeWhen: c.condition.activeWhen, strength: c.strength ?? null, layers: c.layers ?? null, behaviour: !!c.behaviourVector }));
  return `cast:${(await sha256Hex(head, f(c.condition.vector), ...(c.behaviourVector ? [f(c.behaviourVector)] : []))).slice(0, 16)}`;
}
