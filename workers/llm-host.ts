/**
 * The LLM worker's object: one SteerableModel (src/core/model) behind workers/protocol.ts's LlmWorkerApi.
 * Thin by design: it chooses the device, sets transformers.js's model-location settings, translates protocol
 * requests into core calls and copies results into transferable arrays. All method logic lives in the core.
 */
import * as Comlink from 'comlink';
import { env } from '@huggingface/transformers';
import { formatChat, loadSteerableModel, type GenerateOptions, type LoadProgress, type SteerableModel } from '../src/core/model/index.js';
import { fitDepsFromTokenizer, fitPrompt, parseFitMode } from '../src/core/method/fit.js';
import { chooseDevice, probeWebGpu } from './device.js';
import type {
  DeviceProbe, FitRequest, FitSummary, ForwardRequest, ForwardResult, GenerateEvent, GenerateRequest, GenerateResult, LlmWorkerApi,
  LoadedModelInfo, LoadProgressEvent, LoadRequest, ResidualEvent, SteeringMatrix,
} from './protocol.js';
import { yieldToEventLoop } from '../src/core/util/yield.js';

/**
 * Comlink delivers a proxied callback's calls over its own MessageChannel, so they can overtake, or be overtaken by,
 * the method's result. Every call is kept and awaited before the method resolves: when a load() or generate()
 * resolves, the UI has seen all of its events.
 */
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

/**
 * Makes every forward pass of a generation start on a new macrotask, so cancel() is heard between steps (on WASM,
 * onnxruntime-web's session.run resolves on microtasks only, so a generate() loop would otherwise never let the
 * worker read its message queue and a cancel() would wait until the end). Wraps the
 * instance's forward (already the steering patch's wrapper), which transformers.js calls once per decoding step.
 */
function yieldBeforeEachStep(m: SteerableModel, active: () => boolean): void {
  const tjs = m.model as { forward: (inputs: never) => Promise<unknown> };
  const inner = tjs.forward;
  tjs.forward = async (inputs: never) => {
    if (active()) await yieldToEventLoop();
    return inner(inputs);
  };
}

export function createLlmHost(): LlmWorkerApi {
  let model: SteerableModel | null = null;
  let loading = false;
  let generation: AbortController | null = null;
  // The protocol's setSteering matrix, kept here: the core model holds no steering between calls.
  let hostSteering: Float32Array | null = null;

  const loaded = (what: string): SteerableModel => {
    if (!model) throw new Error(`${what}: no model is loaded; call load() first`);
    return model;
  };

  return {
    async probeDevice(): Promise<DeviceProbe> {
      const p = await probeWebGpu();
      return {
        webgpu: p.ok,
        shaderF16: p.ok && p.shaderF16,
        reason: p.reason,
        crossOriginIsolated: Boolean((globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated),
        hardwareConcurrency: globalThis.navigator?.hardwareConcurrency ?? 1,
      };
    },

    async load(req: LoadRequest, onProgress?: (e: LoadProgressEvent) => void): Promise<LoadedModelInfo> {
      if (!req || typeof req.model !== 'string' || req.model.trim() === '') {
        throw new Error('load: expected { model: "<hub id or local folder name>" }');
      }
      if (loading) throw new Error('load: another load is in progress; wait for it to finish');
      if (generation) throw new Error('load: a generation is running; cancel() it first');
      loading = true;
      const t0 = performance.now();
      const sink = new EventSink(onProgress);
      try {
        const choice = await chooseDevice(req.device ?? 'auto', req.dtype);
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
        yieldBeforeEachStep(m, () => generation !== null);
        model = m;
        hostSteering = null;
        return {
          model: req.model,
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

    async setSteering(matrix: SteeringMatrix): Promise<void> {
      checkSteeringArg(matrix, 'setSteering');
      loaded('setSteering');
      hostSteering = matrix;
    },

    async generate(req: GenerateRequest, onEvent?: (e: GenerateEvent) => void, onResidual?: (e: ResidualEvent) => void): Promise<GenerateResult> {
      if (loading) throw new Error('generate: a model is loading; wait for load() to finish');
      const m = loaded('generate');
      if (generation) throw new Error('generate: a generation is already running; cancel() it or wait');
      if (!req || !req.prompt) throw new Error("generate: expected { prompt: { kind: 'chat', user } | { kind: 'ids', ids }, maxNewTokens }");
      if (!Number.isInteger(req.maxNewTokens) || req.maxNewTokens < 1) {
        throw new Error(`generate: maxNewTokens must be a positive integer, got ${JSON.stringify(req.maxNewTokens)}`);
      }
      checkSteeringArg(req.steering, 'generate');
      if (onResidual && req.steering === undefined) {
        throw new Error('generate: streaming residuals needs an explicit steering in the request (a matrix, or null for none)');
      }
      let promptIds: number[];
      if (req.prompt.kind === 'chat') promptIds = formatChat(m.tokenizer, req.prompt.user, { system: req.prompt.system }).ids;
      else if (req.prompt.kind === 'ids') promptIds = req.prompt.ids.slice();
      else throw new Error(`generate: prompt.kind must be 'chat' or 'ids', got ${JSON.stringify((req.prompt as { kind?: unknown }).kind)}`);

      const controller = new AbortController();
      generation = controller;
      const t0 = performance.now();
      const sink = new EventSink(onEvent);
      const residualSink = new EventSink(onResidual);
      let index = 0;
      try {
        const opts: GenerateOptions = {
          inputIds: promptIds,
          maxNewTokens: req.maxNewTokens,
          sampling: req.sampling ?? null,
          steerPromptPositions: req.steerPromptPositions,
          capture: req.capture ?? 'none',
          signal: controller.signal,
          onToken: sink.active ? (id, text) => sink.emit({ type: 'token', index: index++, id, text }) : undefined,
        };
        // undefined = the setSteering matrix.
        opts.steering = req.steering === undefined ? hostSteering : req.steering;
        if (residualSink.active) {
          // The same fixed matrix, handed over as a policy: the core then shows it, before each pass, the residual
          // of the previous pass, i.e. of the token just generated (step k sees token k - 1's).
          const fixed = req.steering ?? null;
          opts.steering = (ctx) => {
            if (ctx.previousResidual) {
              const residual = own(ctx.previousResidual);
              residualSink.emit(Comlink.transfer({ type: 'residual', index: ctx.step - 1, residual }, [residual.buffer as ArrayBuffer]));
            }
            return fixed;
          };
        }
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
        await residualSink.drain();
        generation = null;
      }
    },

    async fit(req: FitRequest): Promise<FitSummary> {
      if (loading) throw new Error('fit: a model is loading; wait for load() to finish');
      const m = loaded('fit');
      if (!req || typeof req.user !== 'string') throw new Error("fit: expected { user: '<message>', maxNewTokens, mode }");
      const mode = parseFitMode(req.mode, 'fit: mode');
      const r = fitPrompt(fitDepsFromTokenizer(m.tokenizer, { system: req.system }), req.user, { contextLength: m.contextLength, maxNewTokens: req.maxNewTokens, mode });
      return { ...r };
    },

    async cancel(): Promise<void> {
      generation?.abort();
    },

    async forward(req: ForwardRequest): Promise<ForwardResult> {
      if (loading) throw new Error('forward: a model is loading; wait for load() to finish');
      const m = loaded('forward');
      if (!req || !Array.isArray(req.inputIds)) throw new Error('forward: expected { inputIds: number[][] }');
      checkSteeringArg(req.steering, 'forward');
      const r = await m.forward(req.inputIds, { steering: req.steering === undefined ? hostSteering : req.steering });
      const result: ForwardResult = {
        logits: own(r.logits.data), logitsDims: r.logits.dims.slice(),
        residuals: own(r.residuals.data), residualDims: r.residuals.dims.slice(),
      };
      return Comlink.transfer(result, [result.logits.buffer as ArrayBuffer, result.residuals.buffer as ArrayBuffer]);
    },

    async tokenize(text: string): Promise<number[]> {
      if (typeof text !== 'string') throw new Error(`tokenize: expected a string, got ${typeof text}`);
      return loaded('tokenize').tokenizer.encode(text, { add_special_tokens: false });
    },

    async dispose(): Promise<void> {
      generation?.abort();
      const m = model;
      model = null;
      await m?.dispose();
    },
  };
}
