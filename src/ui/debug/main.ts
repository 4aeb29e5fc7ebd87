/**
 * A tiny page that starts the LLM worker and exposes plain-data wrappers around its Comlink API on
 * `window.steerlabDebug`, so headless-Chromium tests (test/browser) can drive it with page.evaluate, and a person
 * can poke it from the devtools console. Not the lab UI.
 */
import * as Comlink from 'comlink';
import type {
  DeviceProbe, ForwardRequest, ForwardResult, GenerateEvent, GenerateRequest, GenerateResult, LlmWorkerApi,
  LoadedModelInfo, LoadProgressEvent, LoadRequest, SteeringMatrix,
} from '../../../workers/protocol.js';

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
const llm = {
  probeDevice: () => guard(llmRemote.probeDevice()),
  load: (req: LoadRequest, cb: (e: LoadProgressEvent) => void) => guard(llmRemote.load(req, cb)),
  setSteering: (m: SteeringMatrix) => guard(llmRemote.setSteering(m)),
  generate: (req: GenerateRequest, cb: (e: GenerateEvent) => void) => guard(llmRemote.generate(req, cb)),
  cancel: () => guard(llmRemote.cancel()),
  forward: (req: ForwardRequest) => guard(llmRemote.forward(req)),
  tokenize: (text: string) => guard(llmRemote.tokenize(text)),
  dispose: () => guard(llmRemote.dispose()),
};

/** Typed arrays become plain number arrays here so page.evaluate can hand them to Node. */
const debugApi = {
  probeDevice: (): Promise<DeviceProbe> => llm.probeDevice(),
  async load(req: LoadRequest): Promise<{ info: LoadedModelInfo; events: LoadProgressEvent[] }> {
    const events: LoadProgressEvent[] = [];
    const info = await llm.load(req, Comlink.proxy((e: LoadProgressEvent) => {
      events.push(e);
      if (e.stage !== 'download') log(`load: ${e.stage}${'file' in e ? ` ${e.file}` : ''}`);
    }));
    log(`loaded ${info.model} on ${info.device} (${info.deviceReason}) in ${info.loadMs.toFixed(0)} ms`);
    return { info, events };
  },
  setSteering: (matrix: number[] | null): Promise<void> => llm.setSteering(matrix ? Float32Array.from(matrix) : null),
  /** cancelAfter: call cancel() once that many token events have arrived (tests the cancel path). */
  async generate(req: Omit<GenerateRequest, 'steering'> & { steering?: number[] | null }, opts: { cancelAfter?: number } = {}): Promise<{
    result: Omit<GenerateResult, 'promptResiduals' | 'tokenResiduals'> & { promptResiduals?: number[]; tokenResiduals?: number[] };
    events: GenerateEvent[];
  }> {
    const events: GenerateEvent[] = [];
    const steering: SteeringMatrix | undefined = req.steering === undefined ? undefined : req.steering === null ? null : Float32Array.from(req.steering);
    const { promptResiduals, tokenResiduals, ...rest } = await llm.generate({ ...req, steering }, Comlink.proxy((e: GenerateEvent) => {
      events.push(e);
      if (events.length === opts.cancelAfter) void llm.cancel();
    }));
    log(`generated ${rest.tokenIds.length} tokens (${rest.finishReason}) in ${rest.ms.toFixed(0)} ms`);
    return {
      result: {
        ...rest,
        promptResiduals: promptResiduals ? Array.from(promptResiduals) : undefined,
        tokenResiduals: tokenResiduals ? Array.from(tokenResiduals) : undefined,
      },
      events,
    };
  },
  cancel: (): Promise<void> => llm.cancel(),
  async forward(req: Omit<ForwardRequest, 'steering'> & { steering?: number[] | null }):
    Promise<Omit<ForwardResult, 'logits' | 'residuals'> & { logits: number[]; residuals: number[] }> {
    const steering = req.steering === undefined ? undefined : req.steering === null ? null : Float32Array.from(req.steering);
    const r = await llm.forward({ ...req, steering });
    return { ...r, logits: Array.from(r.logits), residuals: Array.from(r.residuals) };
  },
  tokenize: (text: string): Promise<number[]> => llm.tokenize(text),
  dispose: (): Promise<void> => llm.dispose(),
};

export type SteerlabDebugApi = typeof debugApi;
(window as unknown as { steerlabDebug: SteerlabDebugApi }).steerlabDebug = debugApi;
log('worker started');
