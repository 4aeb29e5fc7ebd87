/**
 * What a resumed evaluation must share with the run it continues, so that one run folder never mixes records made
 * from different prompts, labels, models, artefacts or settings. Platform-free (the lab can check an IndexedDB run
 * with it too).
 *
 * Two levels:
 *   - the run's settings (its manifest: model identity, direction and controller, conditions, seeds, limits, judge,
 *     special-token handling, the datasets' ids and contents...): compared key by key with the stored manifest;
 *   - every stored record against the prompt it was made from: the prompt's text (a hash, `prompt_hash`), its label,
 *     and the stamp every record of the run carries (model identity, direction id...).
 * The model identity is taken as an opaque string from wherever the model exposes it; this module never guesses it.
 * Beside it the manifest holds a fingerprint of what the model computes (modelFingerprint: a few logits of a fixed
 * probe), compared with a tolerance: two models under one name (folders of the same name, a hub id whose weights
 * were replaced, an external-data file swapped) differ there, while the same model on another machine does not.
 */
import type { EvalRecord } from './records.js';

/** What records store as `prompt_hash` (runner.ts): the run's prompts are hashed the same way here. */
export { promptHash } from './runner.js';

/** A model's answer to a fixed probe: its logits at fixed token ids, at the probe's last position. */
export interface ModelFingerprint {
  probe: number[];
  ids: number[];
  logits: number[];
}

/** What modelFingerprint needs of a model (SteerableModel has it). */
export interface FingerprintTarget {
  vocabSize: number;
  forward(ids: number[][], opts: { steering: null }): Promise<{ logits: { data: Float32Array } }>;
}

const FINGERPRINT_IDS = 16;
/** Relative to the largest fingerprint logit: far above float noise between machines, far below another model. */
const FINGERPRINT_TOLERANCE = 1e-4;

/** A fixed probe (distinct ids spread over the vocabulary) through the model, unsteered; logits at fixed ids. */
export async function modelFingerprint(m: FingerprintTarget): Promise<ModelFingerprint> {
  const V = m.vocabSize;
  const probe = [1, 2, 3, 5, 8].map((k) => 1 + ((k * 7919) % Math.max(1, V - 1)));
  const { logits } = await m.forward([probe], { steering: null });
  const last = logits.data.subarray(logits.data.length - V);
  const ids = [...new Set(Array.from({ length: FINGERPRINT_IDS }, (_, k) => Math.floor(((k + 0.5) * V) / FINGERPRINT_IDS)))];
  return { probe, ids, logits: ids.map((i) => Number(last[i]!.toPrecision(7))) };
}

/** null when `now` is the same model as `stored` (within float noise), else what differs. */
export function compareFingerprints(stored: unknown, now: ModelFingerprint): string | null {
  const s = stored as Partial<ModelFingerprint> | null;
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  if (!s || !Array.isArray(s.logits) || !same(s.probe, now.probe) || !same(s.ids, now.ids)) {
    return 'the run holds no comparable model fingerprint (made by an older Steerlab, or for another vocabulary)';
  }
  const scale = Math.max(...s.logits.map((x) => Math.abs(Number(x))), 1e-6);
  let worst = 0;
  s.logits.forEach((x, i) => (worst = Math.max(worst, Math.abs(Number(x) - now.logits[i]!))));
  if (worst <= FINGERPRINT_TOLERANCE * scale) return null;
  return `on a fixed probe it computes other logits than the run's model (largest difference ${worst.toPrecision(3)}, logits up to ${scale.toPrecision(3)}): other weights`;
}

/** One prompt of the planned run, as its records must match it. */
export interface PlannedPrompt {
  dataset: string;
  id: string;
  label: string | null;
  /** promptHash(text). */
  promptHash: string;
}

export interface RunPlan {
  /** The settings of the whole run (written as the run's manifest); compared key by key with the stored one. */
  settings: Record<string, unknown>;
  prompts: readonly PlannedPrompt[];
  /** Fields every record of the run carries with exactly these values (e.g. model_id, direction_id). */
  recordStamp: Record<string, unknown>;
  /** Settings that only describe (a display name): not compared. */
  displayOnly?: readonly string[];
}

export class ResumeMismatchError extends Error {
  readonly code = 'RESUME_MISMATCH';
  constructor(message: string, readonly differences: string[]) {
    super(message);
    this.name = 'ResumeMismatchError';
  }
}

/** How a settings key is named in messages (unknown keys are named as they are). */
const SETTING_NAMES: Record<string, string> = {
  model_id: 'model identity',
  model_variant: 'model variant (dtype, graph)',
  controller_id: 'controller',
  cast_id: 'CAST settings',
  manual: 'manual settings',
  model_file_name: 'model graph',
  dtype: 'dtype',
  datasets: 'datasets (names, prompt ids, labels or texts)',
  conditions: 'conditions',
  seed: 'seed',
  max_new_tokens: 'max new tokens',
  sampling: 'sampling',
  steer_prompt_positions: 'steered prompt positions',
  fit: 'prompt fitting (--fit)',
  judge: 'judge',
  direction_id: 'direction',
  controller: 'controller file',
  cast: 'CAST settings file',
  alpha: 'alpha',
  special_tokens: 'special-token handling (--allow-special-tokens)',
};

const show = (v: unknown): string => {
  const s = v === undefined ? '(not set)' : JSON.stringify(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
};

function settingDifferences(stored: Record<string, unknown>, now: Record<string, unknown>, displayOnly: readonly string[]): string[] {
  const out: string[] = [];
  for (const k of Object.keys({ ...stored, ...now })) {
    if (displayOnly.includes(k) || JSON.stringify(stored[k]) === JSON.stringify(now[k])) continue;
    if (k === 'datasets') {
      const d = datasetDifference(stored[k], now[k]);
      if (d !== '') out.push(d);
      continue;
    }
    if (k === 'model_fingerprint') {
      // A run exported by the lab has no fingerprint: its model identity (compared above) stands alone then.
      if (stored[k] === undefined) continue;
      const d = compareFingerprints(stored[k], now[k] as ModelFingerprint);
      if (d) out.push(`model: ${d}`);
      continue;
    }
    out.push(`${SETTING_NAMES[k] ?? k}: the run has ${show(stored[k])}, this command ${show(now[k])}`);
  }
  return out;
}

/** The datasets entry says which dataset changed, and how, instead of printing two long arrays. */
function datasetDifference(stored: unknown, now: unknown): string {
  const list = (v: unknown) => (Array.isArray(v) ? (v as Record<string, unknown>[]) : []);
  const a = list(stored);
  const b = list(now);
  const names = (l: Record<string, unknown>[]) => l.map((d) => String(d['name']));
  if (JSON.stringify(names(a)) !== JSON.stringify(names(b))) {
    return `datasets: the run has ${show(names(a))}, this command ${show(names(b))}`;
  }
  const parts: string[] = [];
  a.forEach((d, i) => {
    const e = b[i]!;
    // A run.json written before datasets carried `content` is compared on what it has (records check the texts).
    const changed = Object.keys({ ...d, ...e }).filter((k) => !(k === 'content' && d[k] === undefined) && JSON.stringify(d[k]) !== JSON.stringify(e[k]));
    const what = changed.map((k) => (k === 'ids' ? 'which prompts (ids)' : k === 'content' ? 'prompt texts or labels' : k === 'n' ? `number of prompts (${show(d[k])} -> ${show(e[k])})` : k));
    if (changed.length > 0) parts.push(`dataset '${String(d['name'])}': ${what.join(', ')} changed`);
  });
  return parts.join('; ');
}

const key = (dataset: string, id: string) => JSON.stringify([dataset, id]);

function recordDifferences(records: readonly EvalRecord[], plan: RunPlan): string[] {
  const prompts = new Map(plan.prompts.map((p) => [key(p.dataset, p.id), p]));
  const out: string[] = [];
  const where = (r: EvalRecord) => `record (dataset '${r.dataset}', id '${r.id}', condition '${r.condition}')`;
  for (const r of records) {
    const p = prompts.get(key(r.dataset, r.id));
    if (!p) {
      out.push(`${where(r)} belongs to no prompt of this command`);
      continue;
    }
    if (typeof r['prompt_hash'] !== 'string') out.push(`${where(r)} carries no prompt hash (made by an older Steerlab): its prompt text cannot be checked`);
    else if (r['prompt_hash'] !== p.promptHash) out.push(`${where(r)} was made from another prompt text than the one this command has for that id`);
    if (r['label'] !== p.label) out.push(`${where(r)} has label ${show(r['label'])}, this command gives ${show(p.label)}`);
    for (const [k, v] of Object.entries(plan.recordStamp)) {
      if (JSON.stringify(r[k]) !== JSON.stringify(v)) out.push(`${where(r)} has ${SETTING_NAMES[k] ?? k} ${show(r[k])}, this command ${show(v)}`);
    }
  }
  return out;
}

/**
 * Throws ResumeMismatchError, listing what differs, unless `plan` may continue the run that holds `stored`
 * (storedSettings: its manifest, or null when it has none; records: what it wrote). `where` names the run folder.
 */
export function checkResume(where: string, stored: { settings: Record<string, unknown> | null; records: readonly EvalRecord[] }, plan: RunPlan): void {
  const diffs = [...(stored.settings ? settingDifferences(stored.settings, plan.settings, plan.displayOnly ?? []) : []), ...recordDifferences(stored.records, plan)];
  if (diffs.length === 0) return;
  const shown = diffs.slice(0, 8);
  if (diffs.length > 8) shown.push(`and ${diffs.length - 8} more`);
  // One line: the CLI prints errors as one line on stderr.
  throw new ResumeMismatchError(
    `${where} holds a run that this command cannot continue without mixing results: ${shown.join('; ')}. ` +
      'Give another --out for a new run, or the same model, files and settings to resume this one',
    diffs,
  );
}
