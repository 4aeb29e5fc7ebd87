/**
 * The lab's steering settings as plain data (what its forms hold) and the one translation into a SteeringPolicy,
 * done in the LLM worker next to the flow; the UI only draws the settings and asks whether a policy can run. The CLI
 * builds the same policies from its flags (src/cli/policy-options.ts).
 */
import type { CastCondition } from '../steering/cast.js';
import type { ConditionName } from './conditions.js';
import type { DirectionFile } from '../steering/direction-file.js';
import { DEFAULT_ALPHA, DEFAULT_CAST_STRENGTH, type PolicyKind, type SteeringPolicy } from '../steering/policies.js';

export const POLICY_KINDS: readonly PolicyKind[] = ['off', 'was', 'uniform', 'manual', 'actadd', 'cast'];

export interface PolicySettings {
  kind: PolicyKind;
  alpha: number;
  /** Manual policy: scale s, weight w_l and on/off switch per decoder layer. */
  manualScale: number;
  manualWeights: number[];
  manualEnabled: boolean[];
  actaddCoefficient: number;
  castStrength: number;
}

export function defaultPolicySettings(numLayers: number): PolicySettings {
  return {
    kind: 'was',
    alpha: DEFAULT_ALPHA,
    manualScale: 1,
    manualWeights: new Array<number>(numLayers).fill(0.5),
    manualEnabled: new Array<boolean>(numLayers).fill(true),
    actaddCoefficient: 1,
    castStrength: DEFAULT_CAST_STRENGTH,
  };
}

/** What is loaded besides the model: enough to say which policies can run. */
export interface PolicyAvailability {
  direction: boolean;
  /** The direction carries a raw diff-in-means vector and its layer (ActAdd). */
  rawVector: boolean;
  cast: boolean;
  controller: boolean;
}

/** Why a policy cannot run with what is loaded, in words; null when it can. */
export function policyUnavailable(kind: PolicyKind, a: PolicyAvailability): string | null {
  switch (kind) {
    case 'off':
      return null;
    case 'was':
    case 'uniform':
      if (!a.direction) return 'needs a steering direction (Direction tab)';
      if (!a.controller) return 'needs a controller (Controller tab: train or load one)';
      return null;
    case 'manual':
      return a.direction ? null : 'needs a steering direction (Direction tab)';
    case 'actadd':
      return a.rawVector ? null : 'needs a difference-in-means direction (Direction tab), which carries the raw vector and its layer';
    case 'cast':
      if (!a.cast) return 'needs a CAST condition, fitted when a direction is computed from datasets (Direction tab)';
      return a.direction ? null : 'needs a steering direction (Direction tab)';
  }
}

export interface PolicyArtefacts {
  direction: DirectionFile | null;
  cast: CastCondition | null;
  hasController: boolean;
}

export function availability(a: PolicyArtefacts): PolicyAvailability {
  const d = a.direction;
  return {
    direction: d !== null,
    rawVector: d !== null && d.metadata.method === 'diff-in-means' && d.rawDirection !== undefined && d.metadata.layer !== undefined,
    cast: a.cast !== null,
    controller: a.hasController,
  };
}

/** The policy the settings describe (throws with the reason when it cannot run with these artefacts). */
export function policyFromSettings(s: PolicySettings, a: PolicyArtefacts): SteeringPolicy {
  const why = policyUnavailable(s.kind, availability(a));
  if (why) throw new Error(`policy '${s.kind}' ${why}`);
  switch (s.kind) {
    case 'off':
      return { kind: 'off' };
    case 'was':
    case 'uniform':
      return { kind: s.kind, alpha: s.alpha };
    case 'manual':
      return { kind: 'manual', scale: s.manualScale, layerWeights: [...s.manualWeights], enabledLayers: [...s.manualEnabled], alpha: s.alpha };
    case 'actadd':
      return { kind: 'actadd', vector: a.direction!.rawDirection!, layer: a.direction!.metadata.layer!, coefficient: s.actaddCoefficient };
    case 'cast':
      return { kind: 'cast', condition: a.cast!, strength: s.castStrength };
  }
}

/** The policy kind of an evaluation condition (conditions.ts): 'base' is the model without a patch ('off'). */
export function conditionKind(c: ConditionName): PolicyKind {
  return c === 'base' ? 'off' : c;
}
