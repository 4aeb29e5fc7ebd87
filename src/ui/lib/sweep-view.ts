/**
 * What the Sweep view draws, from a sweep's rows (src/core/eval/sweep.ts SweepRow): the rows checked, the core's
 * Pareto frontier and operating point (chooseOperatingPoint, the rule `lab sweep` writes down), and for each row its
 * settings and sample replies as plain text. No method logic here: frontier and operating point are the core's.
 *
 * A sweep file is the JSON `lab sweep` writes: { rows: SweepRow[], operating_point?: { id } | string | null, ... }
 * (a bare array of rows is taken too). A row may carry `samples`: [{ dataset, prompt, output }] (untrusted text).
 * The operating point the file names wins; without one (or for rows run in the lab) the core's rule picks it.
 */
import { checkSweepAlphas, chooseOperatingPoint, paretoFrontier, type SweepRow } from '../../core/eval/sweep.js';
import { STEERING_MODES, STEER_POSITIONS, type SteeringSettings } from '../../core/steering/modes.js';
import type { PolicyKind } from '../../core/steering/policies.js';
import { POLICY_KINDS } from '../../core/method/settings.js';

export interface SweepSample {
  dataset: string;
  prompt: string;
  output: string;
}

export interface SweepPoint {
  row: SweepRow;
  frontier: boolean;
  operating: boolean;
  samples: SweepSample[];
}

export interface SweepView {
  points: SweepPoint[];
  /** Where the operating point came from, in words ('the file' or the core's rule). */
  operatingFrom: string;
  /** Why there is none, when there is none. */
  operatingNote: string | null;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function samplesOf(raw: unknown, id: string): SweepSample[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new TypeError(`sweep row ${id}: samples must be an array of { dataset, prompt, output }`);
  return raw.map((s, i) => {
    if (!isObj(s) || typeof s.output !== 'string') throw new TypeError(`sweep row ${id}: sample ${i} must be { dataset, prompt, output } with text output`);
    return { dataset: typeof s.dataset === 'string' ? s.dataset : '', prompt: typeof s.prompt === 'string' ? s.prompt : '', output: s.output };
  });
}

/** Reads a sweep file's text (JSON); throws naming what was wrong. */
export function parseSweepJson(text: string, source = 'sweep file'): SweepView {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${source}: not JSON (${(e as Error).message}); expected the sweep JSON written by lab sweep`);
  }
  const rows = Array.isArray(raw) ? raw : isObj(raw) ? raw.rows : undefined;
  if (!Array.isArray(rows) || rows.length === 0) throw new Error(`${source}: expected { rows: [...] } with at least one sweep row (id, split, metrics)`);
  const op = isObj(raw) ? raw.operating_point : undefined;
  const opId = typeof op === 'string' ? op : isObj(op) && typeof op.id === 'string' ? op.id : isObj(op) && isObj(op.chosen) && typeof op.chosen.id === 'string' ? op.chosen.id : null;
  return sweepView(rows as SweepRow[], opId);
}

/** The view of some rows: frontier and operating point from the core (or the operating point a file names). */
export function sweepView(rows: readonly SweepRow[], operatingId: string | null = null): SweepView {
  const frontier = new Set(paretoFrontier(rows.filter((r) => !r.base)).map((r) => r.id));
  let operating = operatingId;
  let operatingFrom = 'named by the sweep file';
  let operatingNote: string | null = null;
  if (operating !== null && !rows.some((r) => r.id === operating)) throw new Error(`the sweep's operating point ${operating} is not one of its rows`);
  if (operating === null) {
    operatingFrom = "the core's rule (src/core/eval/sweep.ts)";
    try {
      const p = chooseOperatingPoint(rows);
      operating = p.chosen?.id ?? null;
      if (!p.chosen) operatingNote = 'no row meets the rule (see the feasibility limits)';
    } catch (e) {
      operatingNote = (e as Error).message;
    }
  }
  const points = rows.map((row) => ({
    row,
    frontier: frontier.has(row.id),
    operating: row.id === operating,
    samples: samplesOf((row as { samples?: unknown }).samples, row.id),
  }));
  return { points, operatingFrom, operatingNote };
}

/** What the playground can take from a row's settings: policy, alpha and the steering settings (each when present). */
export interface PlaygroundSettings {
  kind?: PolicyKind;
  alpha?: number;
  steering?: SteeringSettings;
}

/**
 * A row's settings as the playground's: { policy | kind, alpha, steering | (mode, layers, positions, alpha_scale) }.
 * Throws when nothing usable is there.
 */
export function playgroundSettings(settings: unknown, id: string): PlaygroundSettings {
  if (!isObj(settings)) throw new Error(`sweep row ${id} carries no settings to load`);
  const out: PlaygroundSettings = {};
  const kind = settings.policy ?? settings.kind;
  if (typeof kind === 'string' && (POLICY_KINDS as readonly string[]).includes(kind)) out.kind = kind as PolicyKind;
  if (typeof settings.alpha === 'number' && Number.isFinite(settings.alpha)) out.alpha = settings.alpha;
  const st = isObj(settings.steering) ? settings.steering : settings;
  const mode = st.mode;
  const positions = st.positions;
  if ((STEERING_MODES as readonly unknown[]).includes(mode) && (STEER_POSITIONS as readonly unknown[]).includes(positions)) {
    const layers = isObj(st.layers) && typeof st.layers.first === 'number' && typeof st.layers.last === 'number' ? { first: st.layers.first, last: st.layers.last } : null;
    const alpha = isObj(st.alpha) && st.alpha.scale === 'relative' && isObj(st.alpha.calibration) ? (st.alpha as SteeringSettings['alpha']) : { scale: 'absolute' as const };
    out.steering = { mode: mode as SteeringSettings['mode'], layers, positions: positions as SteeringSettings['positions'], alpha };
  }
  if (out.kind === undefined && out.alpha === undefined && out.steering === undefined) throw new Error(`sweep row ${id}: its settings name no policy, alpha or steering mode the playground knows`);
  return out;
}

/** One line of a row's settings, plain text (tooltips and the detail box). */
export function settingsLine(settings: unknown): string {
  if (!isObj(settings)) return 'no settings';
  return Object.entries(settings)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}: ${isObj(v) || Array.isArray(v) ? JSON.stringify(v).slice(0, 120) : String(v)}`)
    .join(' · ');
}

/** The Sweep form's alphas ("1, 2, 4"): numbers, at least one, then core checkSweepAlphas; throws naming the bad entry. */
export function parseAlphas(text: string): number[] {
  const parts = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (parts.length === 0) throw new Error('alphas: enter at least one number, e.g. "2, 4, 8"');
  const out = parts.map((p) => {
    const x = Number(p);
    if (p === '' || !Number.isFinite(x)) throw new Error(`alphas: "${p}" is not a number; expected a comma-separated list such as "2, 4, 8"`);
    return x;
  });
  // the core's check, as `lab sweep` meets it: none twice, each within the strength limit
  checkSweepAlphas(out);
  return out;
}
