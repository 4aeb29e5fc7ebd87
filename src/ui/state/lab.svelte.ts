/**
 * The lab's shared state (Svelte 5 runes) and the actions that change it: the loaded model, the active direction and
 * controller (held by the LLM worker, which checks them against the model; the UI keeps their bytes for saving and
 * export), the steering settings. Panels read `lab` and call these functions; the method runs in the LLM worker.
 */
import type { ControllerMetadata } from '../../core/controller/metadata.js';
import { defaultPolicySettings, type PolicyAvailability, type PolicySettings } from '../../core/method/settings.js';
import { residualIndex } from '../../core/model/layer-index.js';
import type { CastCondition } from '../../core/steering/cast.js';
import type { LayerSeparation } from '../../core/steering/diff-in-means.js';
import type { DeviceProbe, DirectionInfo, LlmDeviceRequest, LlmDtype, LoadedModelInfo, LoadProgressEvent } from '../../../workers/protocol.js';
import { rememberChoice, rememberedChoice, type ArtefactChoice } from '../lib/active-choice.js';
import { listArtefacts, newArtefactId, saveArtefact, type ArtefactKind, type StoredArtefact } from '../lib/artefacts.js';
import { errorText } from '../lib/format.js';
import { DEFAULT_MODEL, type ModelChoice } from '../lib/models.js';
import { llmWorker, proxy } from '../lib/workers.js';
import { startJob } from './jobs.svelte.js';

export interface FileProgress {
  file: string;
  loaded: number;
  total: number | null;
  done: boolean;
  fromCache: boolean;
}

/** Where an active direction or controller came from: an item of the Direction / Controller tab's list, or not (yet) saved. */
export type ActiveSource = ArtefactChoice | { source: 'unsaved' };

export interface ActiveDirection {
  /** What the LLM worker made active: metadata, content id, file bytes, CAST condition. */
  info: DirectionInfo;
  name: string;
  /** Which list item it is: shipped, saved (IndexedDB id) or the embedding direction computed at load. */
  source: ActiveSource;
  separation: LayerSeparation[];
  /** Where it came from, in words (shown next to it). */
  origin: string;
  /** Made for another model and let in on purpose (the CLI's --allow-other-model); kept when it is saved. */
  allowOtherModel?: boolean;
}

export interface ActiveController {
  metadata: ControllerMetadata;
  /** Content id (controllerId), as eval records carry it. */
  id: string;
  bytes: Uint8Array;
  name: string;
  source: ActiveSource;
  origin: string;
}

export type TabId = 'model' | 'playground' | 'direction' | 'controller' | 'eval' | 'sweep';

export const lab = $state({
  tab: 'model' as TabId,
  probe: null as DeviceProbe | null,
  model: {
    status: 'idle' as 'idle' | 'loading' | 'ready' | 'error',
    choice: DEFAULT_MODEL as ModelChoice,
    stage: '' as string,
    files: [] as FileProgress[],
    info: null as LoadedModelInfo | null,
    error: null as string | null,
  },
  direction: null as ActiveDirection | null,
  controller: null as ActiveController | null,
  /** Whether the loaded model ships a direction / controller (its folder holds them). */
  shipped: { direction: false, controller: false },
  /** What the loaded model starts with on the next load (the remembered choice; null = what it ships). */
  startWith: { direction: null as ArtefactChoice | null, controller: null as ArtefactChoice | null },
  /** What the last load started with, in words (the Model tab shows it). */
  started: '' as string,
  settings: defaultPolicySettings(0) as PolicySettings,
  /** True once the user edited manual s/w: a new prediction then no longer overwrites them. */
  manualEdited: false,
  notice: null as string | null,
  /** Bumped when saved artefacts or runs change outside their panel (a bundle import): lists re-read IndexedDB. */
  savedVersion: 0,
});

/** Which policies can run with what is loaded (core policyUnavailable says why not). */
export function availability(): PolicyAvailability {
  const d = lab.direction?.info;
  return {
    direction: !!d,
    rawVector: !!d && d.metadata.method === 'diff-in-means' && d.metadata.layer !== undefined,
    cast: !!d?.cast,
    controller: lab.controller !== null,
  };
}

/** The settings as plain data for the worker (a Svelte proxy cannot be cloned). */
export function settingsSnapshot(): PolicySettings {
  return $state.snapshot(lab.settings) as PolicySettings;
}

export async function probeDevice(): Promise<void> {
  try {
    lab.probe = await llmWorker().probeDevice();
  } catch (e) {
    lab.probe = { webgpu: false, reason: `probe failed: ${errorText(e)}`, software: null, crossOriginIsolated: false, hardwareConcurrency: 1, wasmThreads: 1 };
  }
}

/** The device 'auto' picks on this probe (workers/device.ts chooseDevice): never a software WebGPU adapter. */
export function autoDevice(probe: DeviceProbe | null): 'webgpu' | 'wasm' {
  return probe?.webgpu && !probe.software ? 'webgpu' : 'wasm';
}

function onLoadProgress(e: LoadProgressEvent): void {
  if (e.stage === 'download') {
    const i = lab.model.files.findIndex((f) => f.file === e.file);
    const row: FileProgress = { file: e.file, loaded: e.loaded, total: e.total, done: e.done, fromCache: e.fromCache };
    if (i >= 0) lab.model.files[i] = row;
    else lab.model.files.push(row);
    lab.model.stage = 'downloading';
  } else {
    lab.model.stage = e.stage === 'self-check' ? 'running the patch self-check' : e.stage === 'session' ? 'creating the inference session' : e.stage === 'patch' ? `patching ${e.file}` : e.stage;
  }
}

/**
 * Loads a model as THE job (jobs.svelte.ts): returns null, doing nothing, while another job runs. The model counts as
 * ready once its direction and controller are in place.
 */
export function loadModel(choice: ModelChoice, dtype: LlmDtype, device: LlmDeviceRequest): Promise<void> | null {
  return startJob('load', async (job) => {
    lab.model.status = 'loading';
    lab.model.choice = choice;
    lab.model.files = [];
    lab.model.error = null;
    lab.model.stage = 'starting';
    lab.model.info = null;
    lab.direction = null;
    lab.controller = null;
    try {
      const info = await llmWorker().load(
        {
          model: choice.id,
          dtype,
          device,
          ...(choice.localModelPath ? { localModelPath: choice.localModelPath, allowRemoteModels: false } : { allowRemoteModels: true }),
        },
        proxy(onLoadProgress),
      );
      lab.model.info = info;
      lab.settings = defaultPolicySettings(info.numLayers);
      lab.manualEdited = false;
      lab.model.stage = 'restoring the direction and controller';
      job.setLabel('restoring the direction and controller');
      await restoreArtefacts(choice, info);
      // Without a controller WAS cannot run: start in manual mode (s = 1, w = 0.5) so the playground steers at once.
      if (!lab.controller) lab.settings.kind = 'manual';
      lab.model.status = 'ready';
      lab.model.stage = 'ready';
    } catch (e) {
      lab.model.status = 'error';
      lab.model.stage = 'failed';
      lab.model.error = await loadErrorText(choice, e);
    }
  });
}

/**
 * The load error in words that name the real cause. A local model whose files are not served comes back from
 * transformers.js as "invalid JSON" (the server answered a missing config.json with its HTML page) or a bare 404:
 * the lab checks the folder itself and says which file is missing instead.
 */
async function loadErrorText(choice: ModelChoice, e: unknown): Promise<string> {
  const raw = errorText(e);
  if (!choice.localModelPath) return raw;
  const base = `${choice.localModelPath.endsWith('/') ? choice.localModelPath : `${choice.localModelPath}/`}${choice.id}/`;
  for (const file of ['config.json', 'tokenizer.json']) {
    if (!(await served(`${base}${file}`))) {
      return `the model's files are missing: ${base}${file} is not served by this lab. Put the model folder under models/${choice.id}/ ` +
        `(config.json, tokenizer.json, onnx/model.onnx) and load again.`;
    }
  }
  return raw;
}

/** Whether a same-origin file is really there (a dev server answers a missing file with its HTML page). */
async function served(url: string): Promise<boolean> {
  try {
    const r = await fetch(url, { method: 'GET', cache: 'no-store' });
    return r.ok && !(r.headers.get('content-type') ?? '').includes('text/html');
  } catch {
    return false;
  }
}

/** Fetches an artefact shipped next to a local model; null when it is not there. */
async function fetchShipped(choice: ModelChoice, path: string | undefined): Promise<Uint8Array | null> {
  if (!path || !choice.localModelPath) return null;
  const base = choice.localModelPath.endsWith('/') ? choice.localModelPath : `${choice.localModelPath}/`;
  try {
    const r = await fetch(`${base}${choice.id}/${path}`);
    if (!r.ok || (r.headers.get('content-type') ?? '').includes('text/html')) return null;
    return new Uint8Array(await r.arrayBuffer());
  } catch {
    return null;
  }
}

/** The shipped files of the loaded model, kept so "Use" on the shipped item needs no second download. */
const shippedBytes: { direction: Uint8Array | null; controller: Uint8Array | null } = { direction: null, controller: null };

const savedAt = (createdAt: string) => `saved ${createdAt.slice(0, 19).replace('T', ' ')}`;

/** What a model starts with when the user never chose: what it ships, else the embedding direction / no controller. */
export function defaultChoice(kind: ArtefactKind): ArtefactChoice {
  if (kind === 'direction') return lab.shipped.direction ? { source: 'shipped' } : { source: 'embedding' };
  return lab.shipped.controller ? { source: 'shipped' } : { source: 'none' };
}

/** What the loaded model starts with on the next load: the remembered choice, else the default. */
export function startChoice(kind: ArtefactKind): ArtefactChoice {
  return lab.startWith[kind] ?? defaultChoice(kind);
}

/** A choice in words, for notes ("the shipped direction", "saved direction 'x'"). */
export function choiceWords(kind: ArtefactKind, c: ArtefactChoice, savedName?: string): string {
  if (c.source === 'shipped') return `the shipped ${kind}`;
  if (c.source === 'embedding') return 'the embedding direction';
  if (c.source === 'none') return 'no controller';
  return `saved ${kind} "${savedName ?? c.id}"`;
}

/**
 * After a load: the direction and controller the user chose for this model (remembered per model), else those it
 * ships, else the paper's embedding direction computed now, so the playground works at once. A direction or
 * controller the user makes later is listed and active for the session, but never replaces this choice silently.
 */
async function restoreArtefacts(choice: ModelChoice, info: LoadedModelInfo): Promise<void> {
  const notes: string[] = [];
  shippedBytes.direction = await fetchShipped(choice, choice.artefacts?.direction);
  shippedBytes.controller = await fetchShipped(choice, choice.artefacts?.controller);
  lab.shipped = { direction: shippedBytes.direction !== null, controller: shippedBytes.controller !== null };
  lab.startWith = { direction: rememberedChoice(info.modelId, 'direction'), controller: rememberedChoice(info.modelId, 'controller') };
  const started: string[] = [];
  for (const kind of ['direction', 'controller'] as const) {
    const wanted = startChoice(kind);
    try {
      started.push(await applyChoice(kind, wanted));
    } catch (e) {
      // The chosen artefact is gone or no longer fits: fall back to the default and say so.
      const fallback = defaultChoice(kind);
      notes.push(`${choiceWords(kind, wanted)} could not be used (${errorText(e)}); using ${choiceWords(kind, fallback)} instead`);
      try {
        started.push(await applyChoice(kind, fallback));
      } catch (e2) {
        notes.push(`${kind} not restored: ${errorText(e2)}`);
      }
    }
  }
  lab.started = started.join('; ');
  lab.notice = notes.length ? notes.join('; ') : null;
}

/** Makes one list item active in the LLM worker; returns it in words. */
async function applyChoice(kind: ArtefactKind, c: ArtefactChoice): Promise<string> {
  const info = lab.model.info;
  if (!info) throw new Error('load a model first');
  const modelName = lab.model.choice.id;
  if (kind === 'direction') {
    if (c.source === 'none') throw new Error('a direction cannot be "none"');
    if (c.source === 'embedding') {
      await computeEmbeddingDirection();
      return 'the embedding direction';
    }
    if (c.source === 'shipped') {
      if (!shippedBytes.direction) throw new Error(`${modelName} ships no direction`);
      await useDirectionBytes(shippedBytes.direction, 'shipped direction', `shipped with ${modelName}`, { source: { source: 'shipped' } });
      return 'the shipped direction';
    }
    const a = (await listArtefacts(info.modelId, 'direction')).find((x) => x.id === c.id);
    if (!a) throw new Error('it is no longer saved in this browser');
    await useSavedDirection(a);
    return `saved direction "${a.name}"`;
  }
  if (c.source === 'embedding') throw new Error('a controller cannot be "embedding"');
  if (c.source === 'none') {
    await llmWorker().clearController();
    lab.controller = null;
    return 'no controller';
  }
  if (c.source === 'shipped') {
    if (!shippedBytes.controller) throw new Error(`${modelName} ships no controller`);
    await useControllerBytes(shippedBytes.controller, 'shipped controller', `shipped with ${modelName}`, { source: 'shipped' });
    return 'the shipped controller';
  }
  const a = (await listArtefacts(info.modelId, 'controller')).find((x) => x.id === c.id);
  if (!a) throw new Error('it is no longer saved in this browser');
  await useControllerBytes(a.bytes, a.name, savedAt(a.createdAt), { source: 'saved', id: a.id }, a.extra.allowOtherModel === true);
  return `saved controller "${a.name}"`;
}

/**
 * "Use" on an item of the Direction or Controller tab's list: makes it active now and the one this model starts with
 * on every later load (remembered in this browser). A job: null while another job runs.
 */
export function chooseArtefact(kind: ArtefactKind, c: ArtefactChoice): Promise<string> | null {
  const info = lab.model.info;
  if (!info) return null;
  return startJob('artefact', async () => {
    const words = await applyChoice(kind, c);
    rememberChoice(info.modelId, kind, c);
    lab.startWith[kind] = c;
    return words;
  });
}

/** A saved direction (with its CAST condition and separation plot) made active. */
export function useSavedDirection(a: StoredArtefact): Promise<string[]> {
  return useDirectionBytes(a.bytes, a.name, savedAt(a.createdAt), {
    source: { source: 'saved', id: a.id },
    cast: a.extra.cast ? castFromJson(a.extra.cast as SerializedCast) : null,
    separation: (a.extra.separation as LayerSeparation[] | undefined) ?? [],
    // imported with "allow a file made for another model": it stays allowed when used again
    allowOtherModel: a.extra.allowOtherModel === true,
  });
}

/** The paper's embedding direction (unembedding rows of the refusal and answer phrases), made active. */
export async function computeEmbeddingDirection(): Promise<void> {
  const r = await llmWorker().computeDirection({ method: 'embedding', n: 1, valN: 1, seed: 0 });
  await useDirectionBytes(r.bytes, 'embedding direction', `computed at load (paper Eq. 7: ${r.summary})`, { source: { source: 'embedding' } });
}

/** CAST conditions are kept as JSON next to a saved direction (IndexedDB extras hold plain data only). */
export interface SerializedCast {
  vector: number[];
  layer: number;
  threshold: number;
  activeWhen: 'above' | 'below';
}

export function castToJson(c: CastCondition): SerializedCast {
  return { vector: Array.from(c.vector), layer: c.layer, threshold: c.threshold, activeWhen: c.activeWhen };
}

export function castFromJson(c: SerializedCast): CastCondition {
  return { vector: Float32Array.from(c.vector), layer: residualIndex(c.layer), threshold: c.threshold, activeWhen: c.activeWhen };
}

/** Stores the active direction in IndexedDB (with its CAST condition and separation plot); returns its id. */
export async function saveDirection(name: string): Promise<string> {
  const d = lab.direction;
  const info = lab.model.info;
  if (!d || !info) throw new Error('no direction to save');
  const id = d.source.source === 'saved' ? d.source.id : newArtefactId('direction');
  await saveArtefact({
    id, kind: 'direction', name, modelId: info.modelId, createdAt: new Date().toISOString(), bytes: d.info.bytes,
    extra: { cast: d.info.cast ? castToJson(d.info.cast) : null, separation: $state.snapshot(d.separation), ...(d.allowOtherModel ? { allowOtherModel: true } : {}) },
  });
  lab.direction = { ...d, name, source: { source: 'saved', id }, origin: d.source.source === 'saved' ? d.origin : `${d.origin}; saved in this browser` };
  return id;
}

/** Makes a direction file active in the LLM worker (which checks it fits the model); returns non-blocking warnings. */
export async function useDirectionBytes(
  bytes: Uint8Array,
  name: string,
  origin: string,
  extra: { cast?: CastCondition | null; separation?: LayerSeparation[]; source?: ActiveSource; allowOtherModel?: boolean } = {},
): Promise<string[]> {
  if (!lab.model.info) throw new Error('load a model first');
  const info = await llmWorker().useDirection({ bytes: bytes.slice(), cast: extra.cast ?? null, source: name, allowOtherModel: extra.allowOtherModel === true });
  lab.direction = { info, name, origin, source: extra.source ?? { source: 'unsaved' }, separation: extra.separation ?? [], ...(extra.allowOtherModel ? { allowOtherModel: true } : {}) };
  return info.warnings;
}

/** A user's vector file (a direction file, safetensors, JSON array or .npy), turned into a direction by the worker. */
export async function importDirectionFile(bytes: Uint8Array, fileName: string, allowOtherModel = false): Promise<string[]> {
  if (!lab.model.info) throw new Error('load a model first');
  const info = await llmWorker().importDirection({ bytes: bytes.slice(), fileName, allowOtherModel });
  lab.direction = { info, name: fileName, origin: `imported from ${fileName}`, source: { source: 'unsaved' }, separation: [], ...(allowOtherModel ? { allowOtherModel: true } : {}) };
  return info.warnings;
}

/**
 * Makes a controller file active in the LLM worker: refused when made for another model, unless allowOtherModel (the
 * CLI's --allow-other-model), which turns the refusal into a warning.
 */
export async function useControllerBytes(bytes: Uint8Array, name: string, origin: string, source: ActiveSource, allowOtherModel = false): Promise<string[]> {
  if (!lab.model.info) throw new Error('load a model first');
  const c = await llmWorker().useController({ bytes: bytes.slice(), source: name, allowOtherModel });
  lab.controller = { metadata: c.metadata, id: c.id, bytes, name, origin, source };
  // A controller is calibrated for the alpha it was trained and evaluated with (the organism's is 14, not the
  // paper's 2): start from it, as the CLI does; the slider still overrides.
  if (Number.isFinite(c.metadata.alpha) && c.metadata.alpha > 0) lab.settings.alpha = c.metadata.alpha;
  if (!lab.manualEdited) lab.settings.kind = 'was';
  return c.warnings;
}
