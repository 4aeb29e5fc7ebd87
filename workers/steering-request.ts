/**
 * The lab's SteeringRequest (the CLI's --mode, --layer-range, positions, --alpha-scale, --norm-set, --norm-n) turned
 * into the core's SteeringSettings for the loaded model, the way src/cli/policy-options.ts resolveSteeringSettings does
 * it: relative alpha measures the residual norms (core residualNorms) on a seed-0 pick of normN calibration prompts.
 * The norms are kept per (model, set, n), so a second run with the same calibration does not measure again.
 */
import { pick } from '../src/core/method/prompt-sets.js';
import { residualNorms } from '../src/core/method/norms.js';
import type { SteerableModel } from '../src/core/model/steerable.js';
import { DEFAULT_STEERING_SETTINGS, validateSteeringSettings, type ResidualNormCalibration, type SteeringSettings } from '../src/core/steering/modes.js';
import type { PolicyKind } from '../src/core/steering/policies.js';
import type { SteeringRequest } from './protocol.js';

/** The CLI's --norm-n default. */
export const DEFAULT_NORM_N = 32;

export class SteeringResolver {
  private readonly norms = new Map<string, ResidualNormCalibration>();

  private key(m: SteerableModel, set: string, n: number): string {
    return `${m.id}\u0000${set}\u0000${n}`;
  }

  /** The calibration already measured for this request, or null (relative alpha not yet calibrated). */
  cached(m: SteerableModel, req: SteeringRequest): ResidualNormCalibration | null {
    if (!req.normSet) return null;
    return this.norms.get(this.key(m, req.normSet.name, req.normN ?? DEFAULT_NORM_N)) ?? null;
  }

  /** Settings without measuring: relative alpha must already be calibrated (else the error says to run once). */
  settingsNow(m: SteerableModel, req: SteeringRequest | undefined, policy: PolicyKind): SteeringSettings {
    if (!req) return DEFAULT_STEERING_SETTINGS;
    const cal = req.alphaScale === 'relative' ? this.cached(m, req) : null;
    if (req.alphaScale === 'relative' && !cal) throw new Error('relative alpha: the residual norms are measured on the first run (Generate)');
    return this.build(m, req, policy, cal);
  }

  async resolve(m: SteerableModel, req: SteeringRequest | undefined, policy: PolicyKind, onProgress?: (done: number, total: number) => void): Promise<SteeringSettings> {
    if (!req) return DEFAULT_STEERING_SETTINGS;
    if (typeof req !== 'object') throw new TypeError('steering: expected { mode, layerRange, positions, alphaScale }');
    let cal: ResidualNormCalibration | null = null;
    if (req.alphaScale === 'relative') {
      if (policy === 'actadd') throw new RangeError("relative alpha does not apply to the 'actadd' policy: it adds a raw vector whose norm is part of the method");
      const set = req.normSet;
      if (!set || typeof set.name !== 'string' || !Array.isArray(set.prompts)) throw new Error('relative alpha needs its calibration prompt set (normSet: { name, prompts })');
      const n = req.normN ?? DEFAULT_NORM_N;
      if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`relative alpha: normN must be a count >= 1, got ${n}`);
      cal = this.cached(m, req);
      if (!cal) {
        cal = await residualNorms(m, pick(set.prompts, n, 0).map((p) => p.text), { set: set.name, ...(onProgress ? { onProgress } : {}) });
        this.norms.set(this.key(m, set.name, n), cal);
      }
    }
    return this.build(m, req, policy, cal);
  }

  private build(m: SteerableModel, req: SteeringRequest, policy: PolicyKind, cal: ResidualNormCalibration | null): SteeringSettings {
    const settings = {
      mode: req.mode,
      layers: req.layerRange ? { first: req.layerRange.first, last: req.layerRange.last } : null,
      positions: req.positions,
      alpha: cal ? { scale: 'relative', calibration: cal } : { scale: req.alphaScale === 'relative' ? 'relative' : 'absolute' },
    };
    return validateSteeringSettings(settings, { numLayers: m.numLayers, hiddenSize: m.hiddenSize }, policy);
  }
}
