/**
 * The LLM worker's object: one SteerableModel (src/core/model) with its active direction and controller, behind
 * workers/protocol.ts's LlmWorkerApi. Thin by design: it chooses the device, sets transformers.js's model-location
 * settings, checks requests, and calls the same core functions the CLI calls (compareFlow, the direction builders,
 * controllerActivations, runEval); it copies results into transferable arrays. No method logic lives here.
 */
import * as Comlink from 'comlink';
import { env } from '@huggingface/transformers';
import { controllerInputLayers } from '../src/core/controller/layers.js';
import { splitControllerDataset } from '../src/core/controller/dataset.js';
import { getJudge } from '../src/core/eval/judges.js';
import { IdbRecordStore } from '../src/core/eval/records-idb.js';
import { checkBatch } from '../src/core/eval/batch.js';
import { PAPER_SAMPLING, runEval, runSettings } from '../src/core/eval/runner.js';
import { runSweep } from '../src/core/eval/sweep-run.js';
import type { EvalRecord } from '../src/core/eval/records.js';
import { checkDirectionFor, controllerFromBytes, directionId, directionTieWarning } from '../src/core/method/artifacts.js';
import { castId, conditionsAlpha, type EvalCondition } from '../src/core/method/conditions.js';
import { controllerActivations, lastTokenActivations } from '../src/core/method/activations.js';
import { diffInMeansOfModel, directionReport, embeddingDirectionOfModel } from '../src/core/method/directions.js';
import { compareFlow, policyMatrix, type MethodController, type PolicyOutcome } from '../src/core/method/flow.js';
import { controllerPrompts, directionPrompts } from '../src/core/method/prompt-sets.js';
import { manualControlVector } from '../src/core/method/control-vector.js';
import { conditionKind, policyFromSettings, type PolicySettings } from '../src/core/method/settings.js';
import { loadSteerableModel, type GenerateOptions, type LoadProgress, type SteerableModel } from '../src/core/model/index.js';
import { modelFields } from '../src/core/model/model-id.js';
import { validateCastCondition } from '../src/core/steering/cast.js';
import { decodeDirectionFile, encodeDirectionFile, type DirectionFile } from '../src/core/steering/direction-file.js';
import { importDirection } from '../src/core/steering/direction-import.js';
import { rowNorms } from '../src/core/steering/matrix.js';
import { applySteeringSettings, settingsRecord, type SteeringSettings } from '../src/core/steering/modes.js';
import type { CastCondition } from '../src/core/steering/cast.js';
import { chooseDevice, probeWebGpu, wasmThreads } from './device.js';
import { SteeringResolver } from './steering-request.js';
import type {
  CompareEvent, CompareReply, CompareRequest, ControllerActivationSpec, ControlVectorFile, ControllerSummary, ControllerTrainingSet, DeviceProbe,
  DirectionInfo, DirectionJobResult, DirectionJobSpec, EvalOutcome, EvalPlan, EvalProgressEvent, ForwardRequest, ForwardResult,
  GenerateEvent, GenerateRequest, GenerateResult, ImportDirectionRequest, JobProgressEvent, LlmWorkerApi, LoadedModelInfo,
  LoadProgressEvent, LoadRequest, PolicyReadout, PreviewReply, SteeringRequest, SweepOutcome, SweepProgressEvent, SweepRequest,
  UseControllerRequest, UseDirectionRequest,
} from './protocol.js';
import { yieldToEventLoop } from '../src/core/util/yield.js';

/**
 * Comlink delivers a proxied callback's calls over its own MessageChannel, so they can overtake, or be overtaken by,
 * the method's result. Every call is kept and awaited before the method resolves: when an operation resolves, the
 * UI has seen all of its events.
 */
/**
 * Coalesces a stream of events into one 'batch' event per `everyMs` (the first event of a batch waits at most that
 * long; the worker's decode loop yields between steps, so the timer runs). flush() sends what is left.
 */
class Coalescer<E> {
  private buffer: E[] = [];
  private transfers: ArrayBuffer[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  constructor(private readonly send: (events: E[], transfers: ArrayBuffer[]) => void, private readonly everyMs: number) {}
  push(e: E, transfers: ArrayBuffer[] = []): void {
    this.buffer.push(e);
    this.transfers.push(...transfers);
    this.timer ??= setTimeout(() => this.flush(), this.everyMs);
  }
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.buffer.length === 0) return;
    const events = this.buffer;
    const transfers = this.transfers;
    this.buffer = [];
    this.transfers = [];
    this.send(events, transfers);
  }
}

class EventSink<E> {
  private pending: Promise<unknown>[] = [];
  constructor(private readonly callback: ((e: E) => unknown) | undefined) {}
  get active(): boolean {
    return this.callback !== undefined;
  }
  emit(e: E): void {
    if (this.callback) this.pending.push(Promise.resolve(this.callback(e)));
  }
  /** Waits for every delivered event; a callback that threw on the UI side does not fail the operation. */
  async drain(): Promise<void> {
    const p = this.pending;
    this.pending = [];
    await Promise.allSettled(p);
  }
}

/** Download progress crosses the worker boundary at most once per percent per file (plus the final event). */
function thinDownloadProgress(sink: EventSink<LoadProgressEvent>): (p: LoadProgress) => void {
  const lastPercent = new Map<string, number>();
  return (p) => {
    if (p.stage === 'download' && !p.done && p.total) {
      const pct = Math.floor((100 * p.loaded) / p.total);
      if (lastPercent.get(p.file) === pct) return;
      lastPercent.set(p.file, pct);
    }
    sink.emit(p);
  };
}

/** A fresh copy whose buffer can be transferred without detaching anything the model still holds. */
function own(a: Float32Array): Float32Array {
  return a.slice();
}

function checkSteeringArg(m: unknown, what: string): void {
  if (m !== null && m !== undefined && !(m instanceof Float32Array)) {
    throw new Error(`${what}: steering must be a Float32Array [numLayers*hiddenSize] or null, got ${Object.prototype.toString.call(m)}`);
  }
}

function checkBytes(b: unknown, what: string): Uint8Array {
  if (!(b instanceof Uint8Array) || b.length === 0) throw new Error(`${what}: expected the file's bytes as a non-empty Uint8Array`);
  return b;
}

function checkCount(v: unknown, what: string): number {
  if (!Number.isInteger(v) || (v as number) < 1) throw new Error(`${what} must be a whole number >= 1, got ${JSON.stringify(v)}`);
  return v as number;
}

/**
 * Makes every forward pass of a job start on a new macrotask, so cancel() is heard between steps (on WASM,
 * onnxruntime-web's session.run resolves on microtasks only, so a generate() loop would otherwise never let the
 * worker read its message queue and a cancel() would wait until the end). Wraps the instance's forward (already the
 * steering patch's wrapper), which transformers.js calls once per decoding step and SteerableModel.forward once.
 */
function yieldBeforeEachStep(m: SteerableModel, active: () => boolean): void {
  const tjs = m.model as { forward: (inputs: never) => Promise<unknown> };
  const inner = tjs.forward;
  tjs.forward = async (inputs: never) => {
    if (active()) await yieldToEventLoop();
    return inner(inputs);
  };
}

interface ActiveDirection {
  file: DirectionFile;
  id: string;
  bytes: Uint8Array;
  cast: CastCondition | null;
}

function readoutOf(policy: PolicySettings['kind'], o: PolicyOutcome, numLayers: number, hiddenSize: number): PolicyReadout {
  return {
    policy,
    prediction: o.prediction ? { scale: o.prediction.scale, layerWeights: own(o.prediction.layerWeights) } : null,
    rowNorms: o.matrix ? rowNorms(o.matrix, { numLayers, hiddenSize }) : null,
    cast: o.cast ?? null,
  };
}

export function createLlmHost(): LlmWorkerApi {
  let model: SteerableModel | null = null;
  let loading = false;
  let direction: ActiveDirection | null = null;
  let controller: MethodController | null = null;
  /** Content id of the active controller (controllerId): what eval records carry. */
  let controllerIdValue: string | null = null;
  /** Unsteered residual of the last compared prompt's last token: what preview() recomputes the read-outs on. */
  let observed: Float32Array | null = null;
  let job: { name: string; abort: AbortController } | null = null;
  /** Steering requests -> core settings, with the relative-alpha norms measured once per model and calibration set. */
  const steeringResolver = new SteeringResolver();

  const loaded = (what: string): SteerableModel => {
    if (loading) throw new Error(`${what}: a model is loading; wait for load() to finish`);
    if (!model) throw new Error(`${what}: no model is loaded; call load() first`);
    return model;
  };

  /** One job at a time: the steering patch of a model carries one operation's steering. */
  async function runJob<T>(name: string, fn: (signal: AbortSignal, m: SteerableModel) => Promise<T>): Promise<T> {
    const m = loaded(name);
    if (job) throw new Error(`${name}: ${job.name} is running; cancel() it or wait`);
    const abort = new AbortController();
    job = { name, abort };
    try {
      return await fn(abort.signal, m);
    } finally {
      job = null;
    }
  }

  const parts = () => ({ direction: direction?.file.direction ?? null, controller });
  const artefacts = () => ({ direction: direction?.file ?? null, cast: direction?.cast ?? null, hasController: controller !== null });

  async function activateDirection(
    m: SteerableModel,
    file: DirectionFile,
    bytes: Uint8Array,
    cast: CastCondition | null,
    source: string,
    allowOtherModel = false,
  ): Promise<DirectionInfo> {
    // The CLI's checks (artifacts.ts): shape, and made for this model (identity) unless allowed.
    const { id, warnings } = await checkDirectionFor(file, m, source, { allowOtherModel });
    if (cast) validateCastCondition(cast, m.numLayers, m.hiddenSize);
    const tie = directionTieWarning(controller, id);
    if (tie) warnings.push(tie);
    direction = { file, id, bytes, cast };
    return { metadata: { ...file.metadata }, id, bytes: bytes.slice(), cast: cast ? { ...cast, vector: cast.vector.slice() } : null, warnings };
  }

  return {
    async probeDevice(): Promise<DeviceProbe> {
      const p = await probeWebGpu();
      const isolated = Boolean((globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated);
      const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
      return {
        webgpu: p.ok,
        shaderF16: p.ok && p.shaderF16,
        reason: p.reason,
        software: p.ok ? p.software : null,
        crossOriginIsolated: isolated,
        hardwareConcurrency: cores,
        wasmThreads: wasmThreads(isolated, cores),
      };
    },

    async load(req: LoadRequest, onProgress?: (e: LoadProgressEvent) => void): Promise<LoadedModelInfo> {
      if (!req || typeof req.model !== 'string' || req.model.trim() === '') {
        throw new Error('load: expected { model: "<hub id or local folder name>" }');
      }
      if (loading) throw new Error('load: another load is in progress; wait for it to finish');
      if (job) throw new Error(`load: ${job.name} is running; cancel() it first`);
      loading = true;
      const t0 = performance.now();
      const sink = new EventSink(onProgress);
      try {
        const choice = await chooseDevice(req.device ?? 'auto', req.dtype);
        direction = null;
        controller = null;
        controllerIdValue = null;
        observed = null;
        if (model) {
          const old = model;
          model = null;
          await old.dispose();
        }
        // transformers.js reads these globals at load time; the worker holds one model, so setting them per load is safe.
        if (req.localModelPath !== undefined) {
          env.allowLocalModels = true;
          env.localModelPath = req.localModelPath;
        }
        env.allowRemoteModels = req.allowRemoteModels ?? true;
        let m: SteerableModel;
        try {
          m = await loadSteerableModel(req.model, {
            device: choice.device,
            dtype: req.dtype,
            modelFileName: req.modelFileName,
            selfCheck: req.selfCheck ?? true,
            progress: sink.active ? thinDownloadProgress(sink) : undefined,
          });
        } catch (e) {
          if (choice.device !== 'webgpu') throw e;
          // No retry on WASM here: after a WebGPU kernel failure onnxruntime-web keeps failing in this worker.
          throw new Error(
            `${(e as Error).message} [on WebGPU (${choice.reason}); onnxruntime-web in this worker may stay broken ` +
              `after a WebGPU failure: start a new LLM worker and load with device 'wasm']`,
            { cause: e },
          );
        }
        yieldBeforeEachStep(m, () => job !== null);
        model = m;
        return {
          model: req.model,
          modelId: m.identity.id,
          identity: { id: m.identity.id, name: m.identity.name, variant: { ...m.identity.variant } },
          numLayers: m.numLayers,
          hiddenSize: m.hiddenSize,
          device: choice.device,
          deviceReason: choice.reason,
          dtype: m.dtype,
          patch: { ...m.report, injection_points: m.report.injection_points.map((p) => ({ ...p })) },
          selfCheck: m.selfCheck ? { ...m.selfCheck } : null,
          loadMs: performance.now() - t0,
        };
      } finally {
        await sink.drain();
        loading = false;
      }
    },

    async useDirection(req: UseDirectionRequest): Promise<DirectionInfo> {
      const m = loaded('useDirection');
      const source = req?.source ?? 'direction file';
      const bytes = checkBytes(req?.bytes, 'useDirection');
      return activateDirection(m, decodeDirectionFile(bytes, undefined, source), bytes, req.cast ?? null, source, req.allowOtherModel ?? false);
    },

    async importDirection(req: ImportDirectionRequest): Promise<DirectionInfo> {
      const m = loaded('importDirection');
      const bytes = checkBytes(req?.bytes, 'importDirection');
      const file = importDirection(bytes, req.fileName, { ...modelFields(m.identity), numLayers: m.numLayers, hiddenSize: m.hiddenSize });
      return activateDirection(m, file, encodeDirectionFile(file), null, req.fileName, req.allowOtherModel === true);
    },

    async useController(req: UseControllerRequest): Promise<ControllerSummary> {
      const m = loaded('useController');
      const bytes = checkBytes(req?.bytes, 'useController');
      // The CLI's checks (artifacts.ts): shape, and trained for this model (identity) unless allowed.
      const c = await controllerFromBytes(bytes, m, req.source ?? 'controller file', { allowOtherModel: req.allowOtherModel ?? false });
      controller = c.method;
      controllerIdValue = c.id;
      const warnings = [...c.warnings];
      const tie = directionTieWarning(c.method, direction?.id ?? null);
      if (tie) warnings.push(tie);
      return { metadata: JSON.parse(JSON.stringify(c.controller.metadata)) as ControllerSummary['metadata'], id: c.id, warnings };
    },

    async clearController(): Promise<void> {
      controller = null;
      controllerIdValue = null;
    },

    async exportControlVector(settings: PolicySettings, steering?: SteeringRequest): Promise<ControlVectorFile> {
      const m = loaded('exportControlVector');
      if (!direction) throw new Error('exportControlVector: no direction is active');
      const steer = steeringResolver.settingsNow(m, steering, 'manual');
      const out = manualControlVector(settings, artefacts(), { numLayers: m.numLayers, hiddenSize: m.hiddenSize, name: m.identity.name }, steer);
      return Comlink.transfer({ bytes: out.bytes, layers: out.layers, warnings: out.warnings }, [out.bytes.buffer as ArrayBuffer]);
    },

    async compare(req: CompareRequest, onEvent?: (e: CompareEvent) => void): Promise<CompareReply> {
      if (!req || typeof req.prompt !== 'string' || req.prompt.trim() === '') throw new Error('compare: expected { prompt: "<user message>", maxNewTokens, settings }');
      const maxNewTokens = checkCount(req.maxNewTokens, 'compare: maxNewTokens');
      const policy = policyFromSettings(req.settings, artefacts());
      return runJob('compare', async (signal, m) => {
        const t0 = performance.now();
        const sink = new EventSink(onEvent);
        const index = [0, 0];
        // One message per ~16 ms of decoding (a frame), not three per token.
        const batch = new Coalescer<CompareEvent>((events, transfers) => sink.emit(Comlink.transfer({ type: 'batch', events }, transfers)), 16);
        try {
          const steering = await steeringResolver.resolve(m, req.steering, policy.kind);
          const r = await compareFlow(m, req.prompt, parts(), {
            policy,
            maxNewTokens,
            settings: steering,
            allowSpecialTokens: req.allowSpecialTokens === true,
            sampling: req.sampling ? { ...req.sampling } : null,
            fit: req.fit ?? 'middle',
            signal,
            ...(sink.active
              ? {
                  onToken: (row: number, id: number, text: string) => batch.push({ type: 'token', row: row as 0 | 1, index: index[row]!++, id, text }),
                  onHeatRow: (i: number, values: Float32Array) => batch.push({ type: 'heat', index: i, values }, [values.buffer as ArrayBuffer]),
                }
              : {}),
          });
          observed = r.promptResidual;
          const reply: CompareReply = {
            ...readoutOf(req.settings.kind, { matrix: r.matrix, prediction: r.scale === null ? null : { scale: r.scale, layerWeights: Float32Array.from(r.layerWeights!) }, ...(r.cast ? { cast: r.cast } : {}) }, m.numLayers, m.hiddenSize),
            base: { ...r.base, tokenIds: [...r.base.tokenIds] },
            steered: { ...r.steered, tokenIds: [...r.steered.tokenIds] },
            heat: r.heat,
            fit: { ...r.fit },
            steering: settingsRecord(steering),
            specialTokens: { mode: req.allowSpecialTokens === true ? 'allowed' : 'text', found: [...r.specialTokens] },
            ms: performance.now() - t0,
          };
          const transfers = [reply.rowNorms, reply.heat, reply.prediction?.layerWeights].filter((a): a is Float32Array => a instanceof Float32Array);
          return Comlink.transfer(reply, transfers.map((a) => a.buffer as ArrayBuffer));
        } finally {
          batch.flush();
          await sink.drain();
        }
      });
    },

    async preview(settings: PolicySettings, steeringReq?: SteeringRequest): Promise<PreviewReply> {
      const m = loaded('preview');
      let policy;
      let steering: SteeringSettings;
      try {
        policy = policyFromSettings(settings, artefacts());
        steering = steeringResolver.settingsNow(m, steeringReq, policy.kind);
      } catch (e) {
        return { ok: false, reason: (e as Error).message };
      }
      const shape = { numLayers: m.numLayers, hiddenSize: m.hiddenSize };
      // The policy's rows after the layer range and alpha scale: what clamp sets and add adds, and (ablate) the rows
      // whose direction is projected out.
      const readout = (kind: PolicySettings['kind'], o: PolicyOutcome, L: number, H: number): PolicyReadout =>
        readoutOf(kind, { ...o, matrix: applySteeringSettings(o.matrix, { ...steering, mode: 'add' }, shape).steering }, L, H);
      const needsObservation = policy.kind === 'was' || policy.kind === 'uniform' || policy.kind === 'cast';
      if (!observed) {
        if (needsObservation) return { ok: false, reason: `run a prompt: ${policy.kind === 'cast' ? 'CAST checks its condition on the prompt' : 'the controller predicts s and w from its activations'}` };
        // The matrix of off / manual / actadd does not depend on the prompt; without one there is no prediction to show.
        const o = policyMatrix(policy, new Float32Array((m.numLayers + 1) * m.hiddenSize), { ...parts(), controller: null, numLayers: m.numLayers, hiddenSize: m.hiddenSize });
        return { ok: true, ...readout(settings.kind, o, m.numLayers, m.hiddenSize) };
      }
      try {
        const o = policyMatrix(policy, observed, { ...parts(), numLayers: m.numLayers, hiddenSize: m.hiddenSize });
        return { ok: true, ...readout(settings.kind, o, m.numLayers, m.hiddenSize) };
      } catch (e) {
        return { ok: false, reason: (e as Error).message };
      }
    },

    async computeDirection(spec: DirectionJobSpec, onProgress?: (e: JobProgressEvent) => void): Promise<DirectionJobResult> {
      if (!spec || (spec.method !== 'embedding' && spec.method !== 'diff-in-means')) throw new Error("computeDirection: method must be 'embedding' or 'diff-in-means'");
      if ((spec.harmful === undefined) !== (spec.harmless === undefined)) throw new Error('computeDirection: give both harmful and harmless prompt sets, or neither');
      if (spec.method === 'diff-in-means' && !spec.harmful) throw new Error('computeDirection: diff-in-means needs harmful and harmless prompt sets');
      const sets = spec.harmful && spec.harmless
        ? directionPrompts({ name: `harmful set ${spec.harmful.name}`, prompts: spec.harmful.prompts }, { name: `harmless set ${spec.harmless.name}`, prompts: spec.harmless.prompts }, spec.n, spec.valN, spec.seed)
        : null;
      return runJob('computeDirection', async (signal, m) => {
        const sink = new EventSink(onProgress);
        try {
          const progress = (stage: string, done: number, total: number) => sink.emit({ stage, done, total });
          let file: DirectionFile;
          let summary: string;
          let acts = null;
          if (spec.method === 'diff-in-means') {
            const r = await diffInMeansOfModel(
              m,
              { harmfulTrain: sets!.harmful.train, harmlessTrain: sets!.harmless.train, harmfulVal: sets!.harmful.val, harmlessVal: sets!.harmless.val },
              { seed: spec.seed, datasets: { harmful: spec.harmful!.name, harmless: spec.harmless!.name }, selection: { ...spec.selection }, onProgress: progress, signal },
            );
            file = r.file;
            acts = r.lastToken;
            const sel = r.info.selected;
            summary = `chose residual index ${sel.residual_index} (the output of layer ${sel.steering_row}), post-instruction position ${sel.position} of ${r.info.positions}; ${r.info.evaluated} of ${r.info.candidates} candidates evaluated`;
          } else {
            const r = await embeddingDirectionOfModel(m);
            file = r.file;
            summary = `rows of the ${r.info.source_matrix} "${r.info.tensor}"; ${r.info.refusal_token_count} refusal and ${r.info.answer_token_count} answer tokens${r.info.fallback_reason ? `; unembedding not used: ${r.info.fallback_reason}` : ''}`;
            if (sets) {
              const n = sets.harmful.train.length + sets.harmless.train.length;
              let done = 0;
              const step = () => progress('activations', ++done, n);
              acts = {
                harmful: await lastTokenActivations(m, sets.harmful.train, step, signal),
                harmless: await lastTokenActivations(m, sets.harmless.train, step, signal),
              };
            }
          }
          const report = acts ? directionReport(file, acts, m.numLayers, m.hiddenSize) : { separation: [], cast: null };
          const bytes = encodeDirectionFile(file);
          return Comlink.transfer(
            { bytes, metadata: { ...file.metadata }, id: await directionId(file), separation: report.separation.map((x) => ({ ...x })), cast: report.cast, summary },
            [bytes.buffer as ArrayBuffer],
          );
        } finally {
          await sink.drain();
        }
      });
    },

    async collectControllerActivations(spec: ControllerActivationSpec, onProgress?: (e: JobProgressEvent) => void): Promise<ControllerTrainingSet> {
      if (!spec || !spec.harmful || !spec.benign) throw new Error('collectControllerActivations: expected { harmful, benign, n, valFraction, seed }');
      if (!(spec.valFraction > 0 && spec.valFraction < 1)) throw new Error(`held-out fraction must be between 0 and 1 (exclusive), got ${spec.valFraction}`);
      const chosen = controllerPrompts({ name: `harmful set ${spec.harmful.name}`, prompts: spec.harmful.prompts }, { name: `benign set ${spec.benign.name}`, prompts: spec.benign.prompts }, spec.n, spec.seed);
      return runJob('collectControllerActivations', async (signal, m) => {
        const sink = new EventSink(onProgress);
        try {
          const inputLayers = controllerInputLayers(m.numLayers);
          const x = await controllerActivations(m, chosen.prompts, inputLayers, (done, total) => sink.emit({ stage: 'activations', done, total }), signal);
          const { train, validation } = splitControllerDataset({ x, labels: chosen.labels }, inputLayers.length * m.hiddenSize, spec.valFraction, spec.seed);
          const set: ControllerTrainingSet = {
            train: { features: train.x, labels: Uint8Array.from(train.labels) },
            validation: { features: validation.x, labels: Uint8Array.from(validation.labels) },
            inputLayers,
            counts: chosen.counts,
            model: { id: m.identity.id, name: m.identity.name, variant: { ...m.identity.variant } },
            directionId: direction?.id ?? null,
          };
          return Comlink.transfer(set, [set.train.features.buffer as ArrayBuffer, set.validation.features.buffer as ArrayBuffer]);
        } finally {
          await sink.drain();
        }
      });
    },

    async evaluate(plan: EvalPlan, onProgress?: (e: EvalProgressEvent) => void): Promise<EvalOutcome> {
      if (!plan || typeof plan.runId !== 'string' || plan.runId === '') throw new Error('evaluate: expected { runId, datasets, conditions, settings, ... }');
      if (!Array.isArray(plan.conditions) || plan.conditions.length === 0) throw new Error('evaluate: choose at least one condition');
      if (!Array.isArray(plan.datasets) || plan.datasets.length === 0) throw new Error('evaluate: choose at least one dataset');
      const judge = getJudge(plan.judge);
      const conditions: EvalCondition[] = plan.conditions.map((name) => ({
        name,
        policy: policyFromSettings({ ...plan.settings, kind: conditionKind(name) }, artefacts()),
      }));
      const maxNewTokens = checkCount(plan.maxNewTokens, 'evaluate: maxNewTokens');
      const sampling = plan.sampling === 'paper' ? { ...PAPER_SAMPLING } : null;
      return runJob('evaluate', async (signal, m) => {
        const sink = new EventSink(onProgress);
        // run.json as the CLI writes it for the same settings (its --alpha, --scale, --layer-weights, --enabled-layers).
        const s = plan.settings;
        const runJson = await runSettings({
          model: m.identity, datasets: plan.datasets, conditions: plan.conditions, seed: plan.seed, maxNewTokens, sampling,
          steerPromptPositions: 'last', fit: plan.fit, judge: judge.id, directionId: direction?.id ?? null, controllerId: controllerIdValue,
          castId: plan.conditions.includes('cast') && direction?.cast ? await castId({ condition: direction.cast, strength: s.castStrength }) : null,
          alpha: conditionsAlpha(conditions),
          manual: plan.conditions.includes('manual') ? { scale: s.manualScale, layerWeights: [...s.manualWeights], enabledLayers: [...s.manualEnabled] } : null,
        });
        const store = await IdbRecordStore.open(plan.runId);
        try {
          // The steered conditions share one setting; relative alpha is refused for actadd (its vector's norm is the method).
          const steering = plan.steering ? await steeringResolver.resolve(m, plan.steering, plan.conditions.includes('actadd') ? 'actadd' : 'was') : undefined;
          const r = await runEval({
            ...(steering ? { settings: steering } : {}),
            model: m,
            datasets: plan.datasets,
            conditions,
            direction: direction?.file.direction ?? null,
            controller,
            directionId: direction?.id ?? null,
            controllerId: controllerIdValue,
            store,
            judge,
            maxNewTokens,
            sampling,
            seed: plan.seed,
            fit: plan.fit,
            ...(plan.batch !== undefined ? { batch: checkBatch(plan.batch, 'evaluate: batch') } : {}),
            allowSpecialTokens: plan.allowSpecialTokens === true,
            signal,
            // The record as the store holds it (the runner appends RunRecords as EvalRecords).
            onProgress: (p) => sink.emit({ done: p.done, total: p.total, skipped: p.skipped, record: p.record as unknown as EvalRecord | null }),
          });
          return { total: r.total, written: r.written, skipped: r.skipped, failed: r.failed, cancelled: r.cancelled || signal.aborted, runJson };
        } finally {
          await store.close();
          await sink.drain();
        }
      });
    },

    async sweep(req: SweepRequest, onProgress?: (e: SweepProgressEvent) => void): Promise<SweepOutcome> {
      // Datasets, roles, policies and grid are checked by the core (runSweep's checkSweepPlan), as for `lab sweep`.
      if (!req || typeof req.sweepId !== 'string' || req.sweepId === '' || !Array.isArray(req.datasets) || !Array.isArray(req.policies)) {
        throw new Error('sweep: expected { sweepId, datasets, policies, settings, grid, ... }');
      }
      const judge = getJudge(req.judge);
      const maxNewTokens = checkCount(req.maxNewTokens, 'sweep: maxNewTokens');
      const policies: EvalCondition[] = req.policies.map((name) => ({
        name,
        policy: policyFromSettings({ ...req.settings, kind: conditionKind(name) }, artefacts()),
      }));
      return runJob('sweep', async (signal, m) => {
        const sink = new EventSink(onProgress);
        try {
          const report = await runSweep(
            {
              model: m,
              datasets: req.datasets,
              policies,
              grid: req.grid,
              direction: direction?.file.direction ?? null,
              controller,
              directionId: direction?.id ?? null,
              controllerId: controllerIdValue,
              judge,
              maxNewTokens,
              seed: req.seed,
              fit: req.fit,
              ...(req.samples !== undefined ? { samples: checkCount(req.samples, 'sweep: samples') } : {}),
              ...(req.batch !== undefined ? { batch: checkBatch(req.batch, 'sweep: batch') } : {}),
            },
            {
              // Each row is its own IndexedDB run, so an interrupted sweep resumes row by row, record by record.
              openStore: (rowId) => IdbRecordStore.open(`sweep/${req.sweepId}/${rowId}`),
              signal,
              onProgress: (p) => sink.emit(p),
            },
          );
          return { report, cancelled: report === null || signal.aborted };
        } finally {
          await sink.drain();
        }
      });
    },

    async cancel(): Promise<void> {
      job?.abort.abort();
    },

    async generate(req: GenerateRequest, onEvent?: (e: GenerateEvent) => void): Promise<GenerateResult> {
      if (!req || !req.prompt) throw new Error("generate: expected { prompt: { kind: 'chat', user } | { kind: 'ids', ids }, maxNewTokens }");
      checkCount(req.maxNewTokens, 'generate: maxNewTokens');
      checkSteeringArg(req.steering, 'generate');
      return runJob('generate', async (signal, m) => {
        let promptIds: number[];
        if (req.prompt.kind === 'chat') promptIds = m.formatChat(req.prompt.user, { system: req.prompt.system }).ids;
        else if (req.prompt.kind === 'ids') promptIds = req.prompt.ids.slice();
        else throw new Error(`generate: prompt.kind must be 'chat' or 'ids', got ${JSON.stringify((req.prompt as { kind?: unknown }).kind)}`);
        const t0 = performance.now();
        const sink = new EventSink(onEvent);
        let index = 0;
        try {
          const opts: GenerateOptions = {
            inputIds: promptIds,
            maxNewTokens: req.maxNewTokens,
            sampling: req.sampling ?? null,
            steering: req.steering ?? null,
            steerPromptPositions: req.steerPromptPositions,
            capture: req.capture ?? 'none',
            signal,
            onToken: sink.active ? (id, text) => sink.emit({ type: 'token', index: index++, id, text }) : undefined,
          };
          const r = await m.generate(opts);
          const result: GenerateResult = {
            promptIds, tokenIds: r.tokenIds.slice(), text: r.text, finishReason: r.finishReason, ms: performance.now() - t0,
          };
          const transfers: ArrayBuffer[] = [];
          if (r.promptResiduals) transfers.push((result.promptResiduals = own(r.promptResiduals)).buffer as ArrayBuffer);
          if (r.tokenResiduals) transfers.push((result.tokenResiduals = own(r.tokenResiduals)).buffer as ArrayBuffer);
          return Comlink.transfer(result, transfers);
        } finally {
          await sink.drain();
        }
      });
    },

    async forward(req: ForwardRequest): Promise<ForwardResult> {
      const m = loaded('forward');
      if (!req || !Array.isArray(req.inputIds)) throw new Error('forward: expected { inputIds: number[][] }');
      checkSteeringArg(req.steering, 'forward');
      const r = await m.forward(req.inputIds, { steering: req.steering ?? null });
      const result: ForwardResult = {
        logits: own(r.logits.data), logitsDims: r.logits.dims.slice(),
        residuals: own(r.residuals.data), residualDims: r.residuals.dims.slice(),
      };
      return Comlink.transfer(result, [result.logits.buffer as ArrayBuffer, result.residuals.buffer as ArrayBuffer]);
    },

    async dispose(): Promise<void> {
      job?.abort.abort();
      const m = model;
      model = null;
      direction = null;
      controller = null;
      controllerIdValue = null;
      observed = null;
      await m?.dispose();
    },
  };
}
