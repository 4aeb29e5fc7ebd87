/**
 * Named evaluation conditions: what each name means as a steering policy, and what it needs.
 *
 *   base     no patch (the model as shipped, same chat template)
 *   was      row l = s * w_l * alpha * d          (controller + direction; the paper's method)
 *   uniform  row l = s * 0.5 * alpha * d          (controller + direction; the paper's scalar-only ablation)
 *   actadd   raw diff-in-means vector at its layer, coefficient +1  (a diff-in-means direction file)
 *   cast     behaviour vector at the middle layers when the prompt's similarity passes the threshold
 *            (a CAST settings file; see policy-options)
 *
 * alpha defaults to the controller's own alpha (what it was trained for), else 2.0.
 */
import type { CastCondition } from '../steering/cast.js';
import type { DirectionFile } from '../steering/direction-file.js';
import { DEFAULT_ALPHA, type SteeringPolicy } from '../steering/policies.js';
import type { MethodController } from './flow.js';

export const CONDITION_NAMES = ['base', 'was', 'uniform', 'actadd', 'cast'] as const;
export type ConditionName = (typeof CONDITION_NAMES)[number];

export interface EvalCondition {
  name: ConditionName;
  policy: SteeringPolicy;
}

export interface CastSettings {
  condition: CastCondition;
  strength?: number;
  layers?: number[];
  behaviourVector?: Float32Array;
}

export interface ConditionParts {
  direction?: DirectionFile | null;
  controller?: MethodController | null;
  cast?: CastSettings | null;
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
