/**
 * A lab bundle: everything the lab keeps for one model in one .tar, to move work to another browser or machine, or
 * to hand an evaluation to the CLI. Plain files a user can read without the lab:
 *
 *   steerlab-bundle.json              what is inside (names, dates, CAST conditions, separation plots, start choices)
 *   directions/<id>.safetensors       each saved direction (the CLI's direction file: unit vector, and for
 *                                     diff-in-means the raw per-layer vectors and chosen layer that ActAdd uses)
 *   controllers/<id>.safetensors      each saved controller (the CLI's controller file)
 *   runs/<run id>/run.json            each evaluation run as `lab eval --out DIR` writes it (run.json, records.jsonl,
 *   runs/<run id>/records.jsonl       summary.*), so `lab eval --out runs/<run id>` with the same settings resumes it
 *   runs/<run id>/summary.{json,csv,md}
 *
 * Importing puts the directions, controllers and runs back in IndexedDB under their own ids (an id already there is
 * replaced by the bundle's copy), and takes the bundle's start choices where this browser has made none for the model.
 */
import { createTar, parseTar } from 'nanotar';
import { IdbRecordStore, listRuns, saveRun, type EvalRunInfo } from '../../core/eval/records-idb.js';
import { parseRecordsJsonl, runFiles } from '../../core/eval/summary.js';
import type { EvalRecord } from '../../core/eval/records.js';
import { listArtefacts, saveArtefact, type StoredArtefact } from './artefacts.js';
import { rememberChoice, rememberedChoice, type ArtefactChoice } from './active-choice.js';

export const BUNDLE_FORMAT = 'steerlab-lab-bundle';
const MANIFEST = 'steerlab-bundle.json';

interface ArtefactEntry {
  id: string;
  name: string;
  created_at: string;
  file: string;
  /** Directions: CAST condition and separation plot (the lab's extras). */
  extra: Record<string, unknown>;
}

interface RunEntry {
  /** The lab's run (settings, status, planned count): what the Evaluation tab lists. */
  info: EvalRunInfo;
  dir: string;
  /** False for runs made before the lab recorded run.json: their folder has records and summaries only. */
  has_run_json: boolean;
}

export interface BundleManifest {
  format: typeof BUNDLE_FORMAT;
  version: 1;
  model_id: string;
  created_at: string;
  directions: ArtefactEntry[];
  controllers: ArtefactEntry[];
  start_with: { direction: ArtefactChoice | null; controller: ArtefactChoice | null };
  runs: RunEntry[];
}

async function readRecords(runId: string): Promise<EvalRecord[]> {
  const store = await IdbRecordStore.open(runId);
  const out = [...store.records()];
  await store.close();
  return out;
}

const safe = (id: string) => id.replace(/[^\w.-]+/g, '_');

/** The .tar of every direction, controller and evaluation run this browser keeps for `modelId`. */
export async function exportBundle(modelId: string): Promise<{ bytes: Uint8Array; manifest: BundleManifest }> {
  const files: { name: string; data: Uint8Array | string }[] = [];
  const entries = async (kind: 'direction' | 'controller'): Promise<ArtefactEntry[]> =>
    (await listArtefacts(modelId, kind)).map((a: StoredArtefact) => {
      const file = `${kind}s/${safe(a.id)}.safetensors`;
      files.push({ name: file, data: a.bytes });
      return { id: a.id, name: a.name, created_at: a.createdAt, file, extra: a.extra };
    });
  const directions = await entries('direction');
  const controllers = await entries('controller');
  const runs: RunEntry[] = [];
  for (const info of await listRuns()) {
    if ((info.settings as { modelId?: unknown }).modelId !== modelId) continue;
    const dir = `runs/${safe(info.id)}`;
    const runJson = (info.settings as { runJson?: Record<string, unknown> }).runJson;
    const texts = runFiles(runJson ?? {}, await readRecords(info.id));
    for (const [name, text] of Object.entries(texts)) {
      if (name === 'run.json' && !runJson) continue;
      files.push({ name: `${dir}/${name}`, data: text });
    }
    runs.push({ info, dir, has_run_json: runJson !== undefined });
  }
  const manifest: BundleManifest = {
    format: BUNDLE_FORMAT, version: 1, model_id: modelId, created_at: new Date().toISOString(), directions, controllers,
    start_with: { direction: rememberedChoice(modelId, 'direction'), controller: rememberedChoice(modelId, 'controller') }, runs,
  };
  files.unshift({ name: MANIFEST, data: `${JSON.stringify(manifest, null, 1)}\n` });
  return { bytes: createTar(files), manifest };
}

function bad(what: string): never {
  throw new Error(`not a Steerlab bundle: ${what} (expected a .tar exported by the lab's "Export everything")`);
}

/**
 * Puts a bundle's directions, controllers and runs back into this browser for the loaded model. Refuses a bundle
 * made for another model (its artefacts would not fit) and one that is not a bundle, naming what is wrong.
 */
export async function importBundle(
  bytes: Uint8Array,
  loadedModelId: string,
): Promise<{ directions: number; controllers: number; runs: number; keptStart: ('direction' | 'controller')[] }> {
  let items: { name: string; data?: Uint8Array }[];
  try {
    items = parseTar(bytes);
  } catch (e) {
    bad(`the file is not a tar archive (${(e as Error).message})`);
  }
  const file = (name: string): Uint8Array => items.find((i) => i.name === name)?.data ?? bad(`${name} is missing`);
  const text = (name: string) => new TextDecoder().decode(file(name));
  let m: BundleManifest;
  try {
    m = JSON.parse(text(MANIFEST)) as BundleManifest;
  } catch (e) {
    bad(`${MANIFEST} is not JSON (${(e as Error).message})`);
  }
  if (m.format !== BUNDLE_FORMAT || m.version !== 1) bad(`${MANIFEST} says format ${JSON.stringify(m.format)} version ${JSON.stringify(m.version)}`);
  if (m.model_id !== loadedModelId) {
    throw new Error(`this bundle was made for model ${m.model_id}; the loaded model is ${loadedModelId}: load that model first, then import`);
  }
  for (const [kind, list] of [['direction', m.directions], ['controller', m.controllers]] as const) {
    for (const a of list) {
      await saveArtefact({ id: a.id, kind, name: a.name, modelId: m.model_id, createdAt: a.created_at, bytes: file(a.file), extra: a.extra ?? {} });
    }
  }
  for (const r of m.runs) {
    const records = parseRecordsJsonl(text(`${r.dir}/records.jsonl`));
    const store = await IdbRecordStore.open(r.info.id);
    for (const rec of records) if (!store.has(rec)) await store.append(rec);
    await store.close();
    await saveRun(r.info);
  }
  // The bundle's start choice applies where this browser has none for the model; a choice made here stays.
  const keptStart: ('direction' | 'controller')[] = [];
  for (const kind of ['direction', 'controller'] as const) {
    const c = m.start_with?.[kind];
    if (!c) continue;
    if (rememberedChoice(m.model_id, kind)) keptStart.push(kind);
    else rememberChoice(m.model_id, kind, c);
  }
  return { directions: m.directions.length, controllers: m.controllers.length, runs: m.runs.length, keptStart };
}
