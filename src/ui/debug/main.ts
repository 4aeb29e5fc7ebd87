/**
 * A tiny page that starts the LLM worker and exposes plain-data wrappers around its Comlink API on
 * `window.steerlabDebug`, so headless-Chromium tests (test/browser) can drive it with page.evaluate, and a person
 * can poke it from the devtools console. Not the lab UI.
 */
import * as Comlink from 'comlink';
import type {
  CompareEvent, CompareReply, CompareRequest, ControllerActivationSpec, ControllerSummary, DeviceProbe, DirectionInfo,
  DirectionJobResult, DirectionJobSpec, EvalOutcome, EvalPlan, ForwardRequest, ForwardResult, GenerateEvent, GenerateRequest,
  GenerateResult, LlmWorkerApi, LoadedModelInfo, LoadProgressEvent, LoadRequest, PreviewReply, SweepOutcome, SweepProgressEvent,
  SweepRequest,
} from '../../../workers/protocol.js';
import type { PolicySettings } from '../../core/method/settings.js';
import { residualIndex } from '../../core/model/layer-index.js';
import { IdbRecordStore } from '../../core/eval/records-idb.js';
import type { EvalRecord } from '../../core/eval/records.js';

const logEl = document.getElementById('log');
function log(line: string): void {
  if (logEl) logEl.textContent += `${line}\n`;
}

const worker = new Worker(new URL('../../../workers/llm.worker.ts', import.meta.url), { type: 'module' });
const llmRemote = Comlink.wrap<LlmWorkerApi>(worker);

/**
 * A worker that dies at start-up (a module that fails to import) never answers; without this every call would
 * hang until the test times out. The first 'error' event rejects all pending and later calls with its message.
 */
const workerFailed = new Promise<never>((_, reject) => {
  worker.addEventListener('error', (e) => {
    const msg = `LLM worker failed: ${e.message || 'its module did not load (see the browser console)'}`;
    log(msg);
    reject(new Error(msg));
  });
});
workerFailed.catch(() => undefined);
const guard = <T>(p: Promise<T>): Promise<T> => Promise.race([p, workerFailed]);

/** Typed arrays become plain number arrays (and back) here so page.evaluate can hand them to and from Node. */
type Plain<T> = T extends Float32Array | Uint8Array ? number[] : T extends (infer U)[] ? Plain<U>[] : T extends object ? { [K in keyof T]: Plain<T[K]> } : T;

function plain<T>(x: T): Plain<T> {
  if (x instanceof Float32Array || x instanceof Uint8Array) return Array.from(x) as Plain<T>;
  if (Array.isArray(x)) return x.map(plain) as Plain<T>;
  if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)])) as Plain<T>;
  return x as Plain<T>;
}

const bytesOf = (b: number[]) => Uint8Array.from(b);

const debugApi = {
  probeDevice: (): Promise<DeviceProbe> => guard(llmRemote.probeDevice()),
  async load(req: LoadRequest): Promise<{ info: LoadedModelInfo; events: LoadProgressEvent[] }> {
    const events: LoadProgressEvent[] = [];
    const info = await guard(llmRemote.load(req, Comlink.proxy((e: LoadProgressEvent) => {
      events.push(e);
      if (e.stage !== 'download') log(`load: ${e.stage}${'file' in e ? ` ${e.file}` : ''}`);
    })));
    log(`loaded ${info.model} on ${info.device} (${info.deviceReason}) in ${info.loadMs.toFixed(0)} ms`);
    return { info, events };
  },
  async useDirection(bytes: number[], cast?: { vector: number[]; layer: number; threshold: number; activeWhen: 'above' | 'below' } | null): Promise<Plain<DirectionInfo>> {
    const c = cast ? { ...cast, vector: Float32Array.from(cast.vector), layer: residualIndex(cast.layer) } : null;
    return plain(await guard(llmRemote.useDirection({ bytes: bytesOf(bytes), cast: c, source: 'test' })));
  },
  useController: async (bytes: number[]): Promise<ControllerSummary> => guard(llmRemote.useController({ bytes: bytesOf(bytes), source: 'test' })),
  /** cancelAfter: call cancel() once that many token events have arrived (tests the cancel path). */
  async compare(req: CompareRequest, opts: { cancelAfter?: number } = {}): Promise<{ reply: Plain<CompareReply>; events: Plain<CompareEvent>[] }> {
    const events: CompareEvent[] = [];
    const reply = await guard(llmRemote.compare(req, Comlink.proxy((e: CompareEvent) => {
      // The worker sends events in batches; tests read them one by one.
      for (const x of e.type === 'batch' ? e.events : [e]) {
        events.push(x);
        if (x.type === 'token' && events.filter((y) => y.type === 'token').length === opts.cancelAfter) void llmRemote.cancel();
      }
    })));
    log(`compared: base ${reply.base.tokenIds.length} tokens, steered ${reply.steered.tokenIds.length} tokens in ${reply.ms.toFixed(0)} ms`);
    return { reply: plain(reply), events: events.map(plain) };
  },
  preview: async (settings: PolicySettings): Promise<Plain<PreviewReply>> => plain(await guard(llmRemote.preview(settings) as Promise<PreviewReply>)),
  computeDirection: async (spec: DirectionJobSpec): Promise<Plain<DirectionJobResult>> => plain(await guard(llmRemote.computeDirection(spec))),
  async collectControllerActivations(spec: ControllerActivationSpec): Promise<{ trainFeatures: number[]; trainLabels: number[]; inputLayers: number[] }> {
    const r = await guard(llmRemote.collectControllerActivations(spec));
    return { trainFeatures: Array.from(r.train.features), trainLabels: Array.from(r.train.labels), inputLayers: r.inputLayers };
  },
  /** Runs an evaluation into IndexedDB run `plan.runId` and returns the run's records. */
  async evaluate(plan: EvalPlan): Promise<{ outcome: EvalOutcome; records: EvalRecord[] }> {
    const outcome = await guard(llmRemote.evaluate(plan));
    const store = await IdbRecordStore.open(plan.runId);
    const records = [...store.records()];
    await store.close();
    return { outcome, records };
  },
  /** Runs a sweep (rows in IndexedDB runs `sweep/<sweepId>/...`) and returns its outcome with the progress seen. */
  async sweep(req: SweepRequest): Promise<{ outcome: SweepOutcome; events: SweepProgressEvent[] }> {
    const events: SweepProgressEvent[] = [];
    const outcome = await guard(llmRemote.sweep(req, Comlink.proxy((e: SweepProgressEvent) => void events.push(e))));
    return { outcome, events };
  },
  /** cancelAfter: call cancel() once that many token events have arrived (tests the cancel path). */
  async generate(req: Omit<GenerateRequest, 'steering'> & { steering?: number[] | null }, opts: { cancelAfter?: number } = {}): Promise<{
    result: Plain<GenerateResult>;
    events: GenerateEvent[];
  }> {
    const events: GenerateEvent[] = [];
    const steering = req.steering === undefined || req.steering === null ? null : Float32Array.from(req.steering);
    const result = await guard(llmRemote.generate({ ...req, steering }, Comlink.proxy((e: GenerateEvent) => {
      events.push(e);
      if (events.length === opts.cancelAfter) void llmRemote.cancel();
    })));
    log(`generated ${result.tokenIds.length} tokens (${result.finishReason}) in ${result.ms.toFixed(0)} ms`);
    return { result: plain(result), events };
  },
  cancel: (): Promise<void> => guard(llmRemote.cancel()),
  async forward(req: Omit<ForwardRequest, 'steering'> & { steering?: number[] | null }): Promise<Plain<ForwardResult>> {
    const steering = req.steering === undefined || req.steering === null ? null : Float32Array.from(req.steering);
    return plain(await guard(llmRemote.forward({ ...req, steering })));
  },
  dispose: (): Promise<void> => guard(llmRemote.dispose()),
};

export type SteerlabDebugApi = typeof debugApi;
(window as unknown as { steerlabDebug: SteerlabDebugApi }).steerlabDebug = debugApi;
log('worker started');
