/**
 * The lab's shared state (Svelte 5 runes) and the actions that change it: the loaded model, the active direction and
 * controller, the steering settings. Panels read `lab` and call these functions; everything heavy goes to the
 * workers. Pure logic lives in src/ui/lib (tested in Node); this module only wires it to the workers and IndexedDB.
 */
import { residualIndex } from '../../core/model/layer-index.js';
import {
  checkDirectionFits, decodeDirectionFile, encodeDirectionFile, type CastCondition, type ControllerPrediction, type DirectionFile,
  type LayerSeparation,
} from '../../core/steering/index.js';
import type { ControllerMetadata } from '../../core/controller/metadata.js';
import type { DeviceProbe, LlmDeviceRequest, LlmDtype, LoadedModelInfo, LoadProgressEvent } from '../../../workers/protocol.js';
import { listArtefacts, newArtefactId, saveArtefact } from '../lib/artefacts.js';
import { embeddingDirectionResult } from '../lib/direction-job.js';
import { errorText } from '../lib/format.js';
import { DEFAULT_MODEL, type ModelChoice } from '../lib/models.js';
import { controllerFeatures, defaultSettings, type SteeringArtefacts, type SteeringSettings } from '../lib/steer.js';
import { controllerWorker, llmWorker, proxy } from '../lib/workers.js';

export interface FileProgress {
  file: string;
  loaded: number;
  total: number | null;
  done: boolean;
  fromCache: boolean;
}

export interface ActiveDirection {
  file: DirectionFile;
  name: string;
  artefactId: string | null;
  cast: CastCondition | null;
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

export type TabId = 'model' | 'playground' | 'direction' | 'controller' | 'eval';

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
  controllerBackend: '' as string,
  settings: defaultSettings(0) as SteeringSettings,
  /** True once the user edited manual s/w: a new prediction then no longer overwrites them. */
  manualEdited: false,
  /** One long job at a time on the LLM worker (generation, activation collection, evaluation). */
  busy: null as null | 'generate' | 'direction' | 'controller' | 'eval',
  notice: null as string | null,
});

export function artefacts(): SteeringArtefacts {
  const info = lab.model.info;
  const d = lab.direction;
  const actadd =
    d && d.file.metadata.method === 'diff-in-means' && d.file.rawDirection && d.file.metadata.layer !== undefined
      ? { vector: d.file.rawDirection, layer: d.file.metadata.layer }
      : null;
  return {
    numLayers: info?.numLayers ?? 0,
    hiddenSize: info?.hiddenSize ?? 0,
    direction: d?.file.direction ?? null,
    actadd,
    cast: d?.cast ?? null,
    hasController: lab.controller !== null,
  };
}

export async function probeDevice(): Promise<void> {
  try {
    lab.probe = await llmWorker().probeDevice();
  } catch (e) {
    lab.probe = { webgpu: false, reason: `probe failed: ${errorText(e)}`, crossOriginIsolated: false, hardwareConcurrency: 1 };
  }
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
    await controllerWorker().unload();
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
    lab.settings = defaultSettings(info.numLayers);
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

/**
 * After a load: the newest direction and controller saved for this model (IndexedDB), else those shipped with it,
 * else an embedding direction computed now (one forward pass over the phrase tokens) so the playground works at once.
 */
async function restoreArtefacts(choice: ModelChoice, info: LoadedModelInfo): Promise<void> {
  const shape = { numLayers: info.numLayers, hiddenSize: info.hiddenSize, modelId: info.model };
  const notes: string[] = [];
  try {
    const saved = (await listArtefacts(info.model, 'direction'))[0];
    if (saved) {
      const file = decodeDirectionFile(saved.bytes, shape, saved.name);
      lab.direction = {
        file, name: saved.name, artefactId: saved.id, origin: `saved ${saved.createdAt.slice(0, 19).replace('T', ' ')}`,
        cast: (saved.extra.cast as SerializedCast | undefined) ? castFromJson(saved.extra.cast as SerializedCast) : null,
        separation: (saved.extra.separation as LayerSeparation[] | undefined) ?? [],
      };
    } else {
      const shipped = await fetchShipped(choice, choice.artefacts?.direction);
      if (shipped) {
        const file = decodeDirectionFile(shipped, shape, choice.artefacts!.direction);
        lab.direction = { file, name: 'shipped direction', artefactId: null, origin: `shipped with ${choice.id}`, cast: null, separation: [] };
      } else {
        await computeEmbeddingDirection();
      }
    }
  } catch (e) {
    notes.push(`direction not restored: ${errorText(e)}`);
  }
  try {
    const saved = (await listArtefacts(info.model, 'controller'))[0];
    const shipped = saved ? null : await fetchShipped(choice, choice.artefacts?.controller);
    const bytes = saved?.bytes ?? shipped;
    if (bytes) {
      const c = await controllerWorker().load(bytes, { numLayers: info.numLayers, hiddenSize: info.hiddenSize });
      setController({
        metadata: c.metadata, bytes, name: saved?.name ?? 'shipped controller', artefactId: saved?.id ?? null,
        origin: saved ? `saved ${saved.createdAt.slice(0, 19).replace('T', ' ')}` : `shipped with ${choice.id}`,
      });
    }
  } catch (e) {
    notes.push(`controller not restored: ${errorText(e)}`);
  }
  lab.notice = notes.length ? notes.join('; ') : null;
}

/** The paper's embedding direction (input-embedding rows from residual index 0), made active. */
export async function computeEmbeddingDirection(): Promise<void> {
  const info = lab.model.info;
  if (!info) throw new Error('load a model first');
  const llm = llmWorker();
  const H = info.hiddenSize;
  const r = await embeddingDirectionResult(
    (t) => llm.tokenize(t),
    async (ids) => {
      const f = await llm.forward({ inputIds: [ids], steering: null });
      // residuals [1, L+1, S, H]: index 0 is the embedding output, S = ids.length.
      return f.residuals.slice(0, ids.length * H);
    },
    { modelId: info.model, numLayers: info.numLayers, hiddenSize: H, datasets: { harmful: '', harmless: '' }, seed: 0 },
    null,
    null,
  );
  lab.direction = { file: r.file, name: 'embedding direction', artefactId: null, origin: 'computed at load (paper Eq. 7, input embeddings)', cast: null, separation: [] };
}

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
    id, kind: 'direction', name, modelId: info.model, createdAt: new Date().toISOString(), bytes: encodeDirectionFile(d.file),
    extra: { cast: d.cast ? castToJson(d.cast) : null, separation: d.separation },
  });
  lab.direction = { ...d, name, artefactId: id, origin: 'saved in this browser' };
}

/** Makes a direction file active after checking it fits the loaded model; returns non-blocking warnings. */
export function useDirectionFile(file: DirectionFile, name: string, origin: string, extra: { cast?: CastCondition | null; separation?: LayerSeparation[]; artefactId?: string | null } = {}): string[] {
  const info = lab.model.info;
  if (!info) throw new Error('load a model first');
  const warnings = checkDirectionFits(file, { numLayers: info.numLayers, hiddenSize: info.hiddenSize, modelId: info.model }, name);
  lab.direction = { file, name, origin, artefactId: extra.artefactId ?? null, cast: extra.cast ?? null, separation: extra.separation ?? [] };
  return warnings;
}

export async function useControllerBytes(bytes: Uint8Array, name: string, origin: string, artefactId: string | null): Promise<void> {
  const info = lab.model.info;
  if (!info) throw new Error('load a model first');
  const c = await controllerWorker().load(bytes, { numLayers: info.numLayers, hiddenSize: info.hiddenSize });
  setController({ metadata: c.metadata, bytes, name, origin, artefactId });
}

/** Makes a controller active; WAS becomes the policy unless the user is steering by hand. */
export function setController(c: ActiveController): void {
  lab.controller = c;
  // A controller is calibrated for the alpha it was trained and evaluated with (the organism's is 14, not the
  // paper's 2): start from it, as the CLI does; the slider still overrides.
  if (Number.isFinite(c.metadata.alpha) && c.metadata.alpha > 0) lab.settings.alpha = c.metadata.alpha;
  if (!lab.manualEdited) lab.settings.kind = 'was';
}

/** Unsteered residual of the last prompt token [L+1, H] of the chat-formatted prompt (one decoding step). */
export async function observe(text: string): Promise<Float32Array> {
  const r = await llmWorker().generate({ prompt: { kind: 'chat', user: text }, maxNewTokens: 1, steering: null, capture: 'prompt-last' });
  if (!r.promptResiduals) throw new Error('the LLM worker returned no prompt residuals');
  return r.promptResiduals;
}

/** The controller's (s, w) for an observed prompt; null when no controller is loaded. */
export async function predict(promptResiduals: Float32Array): Promise<ControllerPrediction | null> {
  const c = lab.controller;
  const info = lab.model.info;
  if (!c || !info) return null;
  const x = controllerFeatures(promptResiduals, c.metadata.input_layers, info.numLayers, info.hiddenSize);
  const p = await controllerWorker().predict(x, 1);
  return { scale: p.scales[0]!, layerWeights: p.layerWeights };
}
