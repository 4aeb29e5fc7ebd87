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
import { listArtefacts, newArtefactId, saveArtefact } from '../lib/artefacts.js';
import { errorText } from '../lib/format.js';
import { DEFAULT_MODEL, type ModelChoice } from '../lib/models.js';
import { llmWorker, proxy } from '../lib/workers.js';

export interface FileProgress {
  file: string;
  loaded: number;
  total: number | null;
  done: boolean;
  fromCache: boolean;
}

export interface ActiveDirection {
  /** What the LLM worker made active: metadata, content id, file bytes, CAST condition. */
  info: DirectionInfo;
  name: string;
  artefactId: string | null;
  separation: LayerSeparation[];
  /** Where it came from, in words (shown next to it). */
  origin: string;
}

export interface ActiveController {
  metadata: ControllerMetadata;
  bytes: Uint8Array;
  name: string;
  artefactId: string | null;
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
  settings: defaultPolicySettings(0) as PolicySettings,
  /** True once the user edited manual s/w: a new prediction then no longer overwrites them. */
  manualEdited: false,
  /** One long job at a time on the LLM worker (generation, direction, activations, evaluation). */
  busy: null as null | 'generate' | 'direction' | 'controller' | 'eval',
  notice: null as string | null,
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
    lab.probe = { webgpu: false, reason: `probe failed: ${errorText(e)}`, software: null, crossOriginIsolated: false, hardwareConcurrency: 1 };
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

export async function loadModel(choice: ModelChoice, dtype: LlmDtype, device: LlmDeviceRequest): Promise<void> {
  if (lab.busy) throw new Error(`wait for the running ${lab.busy} job to finish (or cancel it) before loading a model`);
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
    // The model counts as ready once its direction and controller are in place; until then other jobs wait.
    lab.model.stage = 'restoring the direction and controller';
    lab.busy = 'direction';
    try {
      await restoreArtefacts(choice, info);
    } finally {
      lab.busy = null;
    }
    // Without a controller WAS cannot run: start in manual mode (s = 1, w = 0.5) so the playground steers at once.
    if (!lab.controller) lab.settings.kind = 'manual';
    lab.model.status = 'ready';
    lab.model.stage = 'ready';
  } catch (e) {
    lab.model.status = 'error';
    lab.model.stage = 'failed';
    lab.model.error = errorText(e);
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

const savedAt = (createdAt: string) => `saved ${createdAt.slice(0, 19).replace('T', ' ')}`;

/**
 * After a load: the newest direction and controller saved for this model (IndexedDB), else those shipped with it,
 * else the paper's embedding direction computed now, so the playground works at once.
 */
async function restoreArtefacts(choice: ModelChoice, info: LoadedModelInfo): Promise<void> {
  const notes: string[] = [];
  try {
    const saved = (await listArtefacts(info.modelId, 'direction'))[0];
    const shipped = saved ? null : await fetchShipped(choice, choice.artefacts?.direction);
    if (saved) {
      await useDirectionBytes(saved.bytes, saved.name, savedAt(saved.createdAt), {
        artefactId: saved.id,
        cast: saved.extra.cast ? castFromJson(saved.extra.cast as SerializedCast) : null,
        separation: (saved.extra.separation as LayerSeparation[] | undefined) ?? [],
      });
    } else if (shipped) {
      await useDirectionBytes(shipped, 'shipped direction', `shipped with ${choice.id}`);
    } else {
      await computeEmbeddingDirection();
    }
  } catch (e) {
    notes.push(`direction not restored: ${errorText(e)}`);
  }
  try {
    const saved = (await listArtefacts(info.modelId, 'controller'))[0];
    const shipped = saved ? null : await fetchShipped(choice, choice.artefacts?.controller);
    if (saved) await useControllerBytes(saved.bytes, saved.name, savedAt(saved.createdAt), saved.id);
    else if (shipped) await useControllerBytes(shipped, 'shipped controller', `shipped with ${choice.id}`, null);
  } catch (e) {
    notes.push(`controller not restored: ${errorText(e)}`);
  }
  lab.notice = notes.length ? notes.join('; ') : null;
}

/** The paper's embedding direction (unembedding rows of the refusal and answer phrases), made active. */
export async function computeEmbeddingDirection(): Promise<void> {
  const r = await llmWorker().computeDirection({ method: 'embedding', n: 1, valN: 1, seed: 0 });
  await useDirectionBytes(r.bytes, 'embedding direction', `computed at load (paper Eq. 7: ${r.summary})`);
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

/** Stores the active direction in IndexedDB (with its CAST condition and separation plot). */
export async function saveDirection(name: string): Promise<void> {
  const d = lab.direction;
  const info = lab.model.info;
  if (!d || !info) throw new Error('no direction to save');
  const id = d.artefactId ?? newArtefactId('direction');
  await saveArtefact({
    id, kind: 'direction', name, modelId: info.modelId, createdAt: new Date().toISOString(), bytes: d.info.bytes,
    extra: { cast: d.info.cast ? castToJson(d.info.cast) : null, separation: d.separation },
  });
  lab.direction = { ...d, name, artefactId: id, origin: 'saved in this browser' };
}

/** Makes a direction file active in the LLM worker (which checks it fits the model); returns non-blocking warnings. */
export async function useDirectionBytes(
  bytes: Uint8Array,
  name: string,
  origin: string,
  extra: { cast?: CastCondition | null; separation?: LayerSeparation[]; artefactId?: string | null } = {},
): Promise<string[]> {
  if (!lab.model.info) throw new Error('load a model first');
  const info = await llmWorker().useDirection({ bytes: bytes.slice(), cast: extra.cast ?? null, source: name });
  lab.direction = { info, name, origin, artefactId: extra.artefactId ?? null, separation: extra.separation ?? [] };
  return info.warnings;
}

/** A user's vector file (a direction file, safetensors, JSON array or .npy), turned into a direction by the worker. */
export async function importDirectionFile(bytes: Uint8Array, fileName: string): Promise<string[]> {
  if (!lab.model.info) throw new Error('load a model first');
  const info = await llmWorker().importDirection({ bytes: bytes.slice(), fileName });
  lab.direction = { info, name: fileName, origin: `imported from ${fileName}`, artefactId: null, separation: [] };
  return info.warnings;
}

/** Makes a controller file active in the LLM worker (refused when made for another model). */
export async function useControllerBytes(bytes: Uint8Array, name: string, origin: string, artefactId: string | null): Promise<string[]> {
  if (!lab.model.info) throw new Error('load a model first');
  const c = await llmWorker().useController({ bytes: bytes.slice(), source: name });
  lab.controller = { metadata: c.metadata, bytes, name, origin, artefactId };
  // A controller is calibrated for the alpha it was trained and evaluated with (the organism's is 14, not the
  // paper's 2): start from it, as the CLI does; the slider still overrides.
  if (Number.isFinite(c.metadata.alpha) && c.metadata.alpha > 0) lab.settings.alpha = c.metadata.alpha;
  if (!lab.manualEdited) lab.settings.kind = 'was';
  return c.warnings;
}
