/**
 * The method in one path (Hegazy et al., "Guiding Giants"), for one prompt:
 *
 *   prompt -(chat template, generation prompt)-> observe pass without steering
 *     -> residual of the LAST prompt token at every layer ([L+1, H], index l+1 = output of layer l)
 *     -> rows of the controller's input layers, concatenated -> controller -> (s, w)
 *     -> policy (was / uniform / manual / actadd / cast / off) -> steering matrix [L, H]
 *     -> generation with the patch on the last prompt token and every new token.
 *
 * No second prefill: the decode engine (SteerableModel.decode, src/core/model/decode.ts) prefills all but the last
 * prompt token unsteered, observes the last token on that cache and hands its residual to the policy before the first
 * steered pass. The matrix is computed once and reused for every later pass, as in the paper (s, w are computed once
 * from the prompt). runFlows runs many prompts (an eval's batch) in one decode call, each with its own matrix.
 */
import { ControllerForward, type ControllerPredictor } from '../controller/forward.js';
import type { Controller, ControllerMetadata } from '../controller/metadata.js';
import type { SteerableModel } from '../model/steerable.js';
import { outputOf, type DecoderLayer } from '../model/layer-index.js';
import { PROJECTION_INPUT } from '../onnx/patcher.js';
import type { DecodeResult, DecodeRow, PromptPrefix, SteerPositions } from '../model/decode.js';
import { checkPrompt } from '../model/generate.js';
import { replyText, TextDeltas } from '../model/reply-text.js';
import { findSpecialTokenStrings } from '../model/special-tokens.js';
import type { SamplingOptions } from '../model/types.js';
import { castDecision } from '../steering/cast.js';
import { fitDepsFromTokenizer, fitPrompt, parseFitMode, type FitMode, type FitResult } from './fit.js';
import { rowNorms } from '../steering/matrix.js';
import { cosine } from '../steering/vector.js';
import { steeringMatrix, type ControllerPrediction, type SteeringPolicy } from '../steering/policies.js';
import { applySteeringSettings, validateSteeringSettings, type ModePatch, type SteeringSettings } from '../steering/modes.js';

/** A controller ready for inference: its network and the layers it reads. */
export interface MethodController {
  /** The plain-TypeScript forward (controller/forward.ts) wherever the flow runs: CLI and LLM worker alike. */
  network: ControllerPredictor;
  /** Decoder layers whose OUTPUT residual (index l+1) forms the input, ascending (controller metadata). */
  inputLayers: readonly DecoderLayer[];
  metadata?: ControllerMetadata;
}

/** A decoded controller file, ready for the flow. */
export function methodController(c: Controller): MethodController {
  return { network: ControllerForward.of(c), inputLayers: [...c.metadata.input_layers], metadata: c.metadata };
}

/** What a policy may need besides the prompt: the unit direction and the controller. */
export interface MethodParts {
  numLayers: number;
  hiddenSize: number;
  /** Unit steering direction d [hidden]; required by was / uniform / manual (and cast without a behaviour vector). */
  direction?: Float32Array | null;
  controller?: MethodController | null;
}

/** The controller's input row: residual rows l+1 of each input layer l, concatenated in ascending order. */
export function controllerInput(residual: Float32Array, inputLayers: readonly DecoderLayer[], numLayers: number, hiddenSize: number): Float32Array {
  const L1H = (numLayers + 1) * hiddenSize;
  if (residual.length !== L1H) throw new RangeError(`residual has ${residual.length} values, expected [L+1 = ${numLayers + 1}, H = ${hiddenSize}]`);
  const out = new Float32Array(inputLayers.length * hiddenSize);
  inputLayers.forEach((l, i) => {
    if (!Number.isSafeInteger(l) || l < 0 || l >= numLayers) throw new RangeError(`controller input layer ${l} is not a decoder layer in 0..${numLayers - 1}`);
    const k = outputOf(l);
    out.set(residual.subarray(k * hiddenSize, (k + 1) * hiddenSize), i * hiddenSize);
  });
  return out;
}

/** (s, w) for one observed residual. */
export function predictFromResidual(controller: MethodController, residual: Float32Array, numLayers: number, hiddenSize: number): ControllerPrediction {
  const out = controller.network.predict(controllerInput(residual, controller.inputLayers, numLayers, hiddenSize));
  return { scale: out.scale, layerWeights: out.layerWeights };
}

export interface PolicyOutcome {
  /** [L*H], or null = no patch (off, or cast whose condition did not hold). */
  matrix: Float32Array | null;
  /** The controller's prediction when a controller was available (also for base: what WAS would have done). */
  prediction: ControllerPrediction | null;
  /** CAST only: the similarity at the condition layer and whether the gate opened. */
  cast?: { similarity: number; active: boolean };
}

function needsController(policy: SteeringPolicy): boolean {
  return policy.kind === 'was' || policy.kind === 'uniform';
}

/**
 * Whether a policy's matrix depends on the prompt's observed residual: through the controller (WAS and uniform use
 * its s and w; any other policy still reports them when a controller is loaded) or through CAST's gate. A manual or
 * base policy without a controller does not, so its patch is fixed before the first pass and the decode runs no
 * observation pass for it.
 */
export function readsResidual(policy: SteeringPolicy, parts: Pick<MethodParts, 'controller'>): boolean {
  return !!parts.controller || needsController(policy) || policy.kind === 'cast';
}

/** Stands in for the residual of a policy that reads none (policyMatrix never looks at it then). */
const NO_RESIDUAL = new Float32Array(0);

/**
 * Policy -> matrix for an observed last-prompt-token residual [L+1, H]. For CAST, condition.layer is a residual index
 * (0 = embeddings, l+1 = output of layer l) read at the last prompt token (IBM mean-pools over the prompt; the
 * single-observation flow reads the same token the controller reads).
 */
export function policyMatrix(policy: SteeringPolicy, residual: Float32Array, parts: MethodParts): PolicyOutcome {
  const { numLayers, hiddenSize } = parts;
  if (needsController(policy) && !parts.controller) {
    throw new Error(`the '${policy.kind}' policy needs a trained controller (train one with 'lab train-controller', pass it with --controller)`);
  }
  const needsDirection = ['was', 'uniform', 'manual'].includes(policy.kind) || (policy.kind === 'cast' && !policy.behaviourVector);
  if (needsDirection && !parts.direction) {
    throw new Error(`the '${policy.kind}' policy needs a steering direction (make one with 'lab direction', pass it with --direction)`);
  }
  const prediction = parts.controller ? predictFromResidual(parts.controller, residual, numLayers, hiddenSize) : null;
  let promptActivation: Float32Array | undefined;
  let cast: PolicyOutcome['cast'];
  if (policy.kind === 'cast') {
    const k = policy.condition.layer;
    if (!Number.isSafeInteger(k) || k < 0 || k > numLayers) throw new RangeError(`CAST condition layer ${k} is not a residual index in 0..${numLayers}`);
    promptActivation = residual.slice(k * hiddenSize, (k + 1) * hiddenSize);
    cast = castDecision(policy.condition, promptActivation);
  }
  const direction = parts.direction ?? new Float32Array(0);
  const matrix = steeringMatrix(policy, {
    numLayers,
    hiddenSize,
    direction,
    ...(prediction ? { prediction } : {}),
    ...(promptActivation ? { promptActivation } : {}),
  });
  return { matrix, prediction, ...(cast ? { cast } : {}) };
}

export interface FlowOptions {
  policy: SteeringPolicy;
  maxNewTokens?: number;
  /** 'last' (default, the paper's flow): last prompt token + new tokens; 'all': every prompt position too; 'new': new tokens only. */
  steerPromptPositions?: 'last' | 'all' | 'new';
  /**
   * Mode (add / clamp / ablate), layer range, positions and alpha scale (src/core/steering/modes.ts); absent = add,
   * all layers, steerPromptPositions, absolute alpha. Its positions must agree with steerPromptPositions when both
   * are given.
   */
  settings?: SteeringSettings;
  /** Absent = greedy. */
  sampling?: SamplingOptions | null;
  /** Observe and predict even when the policy does not need it (e.g. base), so records carry s and w. Default true. */
  observeAlways?: boolean;
  onToken?: (tokenId: number, textDelta: string) => void;
  signal?: AbortSignal;
  /**
   * How a message too long for the model's context is shortened (fit.ts): 'middle' (default) keeps its head and
   * tail around a " [...] " marker, 'head' / 'tail' one end, 'none' leaves it (generation then fails clearly).
   */
  fit?: FitMode;
  /** Let special-token strings in the prompt become special tokens (default: they stay text; prompt.ts). */
  allowSpecialTokens?: boolean;
}

export interface FlowResult {
  text: string;
  tokenIds: number[];
  finishReason: 'eos' | 'length' | 'abort';
  /** Controller's global scale s, or null without a controller. */
  scale: number | null;
  /** Controller's layer weights w (one per layer), or null without a controller. */
  layerWeights: number[] | null;
  /** Per-layer norms of the steering matrix, or null when no patch was applied. */
  rowNorms: number[] | null;
  /** The steering matrix the graph received (after the settings), or null. */
  matrix: Float32Array | null;
  /** The projection matrix the graph received (clamp and ablate modes), or null. */
  projection: Float32Array | null;
  /** Unsteered residual of the last prompt token [L+1, H] (null when nothing needed the observation). */
  promptResidual: Float32Array | null;
  cast?: { similarity: number; active: boolean };
  /** What the model saw: the (possibly shortened) message and the prompt's token counts before and after. */
  fit: FitResult;
  /** Special-token strings in the prompt (text unless allowSpecialTokens); empty for most prompts. */
  specialTokens: string[];
  timings: {
    /** Prefill + observation + controller + policy: until the matrix was ready. */
    observe_ms: number | null;
    /** Steered decoding after the matrix was ready. */
    generate_ms: number;
    total_ms: number;
  };
}

/**
 * The fitted prompt, its ids, the positions and the once-per-generation observation shared by runFlows and
 * compareFlow: `observe` turns the unsteered residual of the last prompt token into the policy's matrix and, under the
 * steering settings, the patch the graph gets (steering + projection rows), computed once, then reused.
 */
function prepareFlow(
  model: SteerableModel,
  prompt: string,
  parts: Omit<MethodParts, 'numLayers' | 'hiddenSize'>,
  opts: Pick<FlowOptions, 'policy' | 'maxNewTokens' | 'fit' | 'allowSpecialTokens' | 'settings' | 'steerPromptPositions'>,
  t0 = performance.now(),
) {
  const numLayers = model.numLayers;
  const hiddenSize = model.hiddenSize;
  const full: MethodParts = { ...parts, numLayers, hiddenSize };
  const settings = opts.settings ? validateSteeringSettings(opts.settings, full, opts.policy.kind) : null;
  if (settings && opts.steerPromptPositions !== undefined && opts.steerPromptPositions !== settings.positions) {
    throw new Error(`steered positions given twice and different: steerPromptPositions '${opts.steerPromptPositions}', settings.positions '${settings.positions}'`);
  }
  const positions = settings?.positions ?? opts.steerPromptPositions ?? 'last';
  const maxNewTokens = opts.maxNewTokens ?? 64;
  // Measured with the model's own chat formatting, the same that builds the ids below.
  const chat = { allowSpecialTokens: opts.allowSpecialTokens === true };
  const fitDeps = { ...fitDepsFromTokenizer(model.tokenizer, chat), promptTokens: (u: string) => model.formatChat(u, chat).ids.length };
  const fit = fitPrompt(fitDeps, prompt, { contextLength: model.contextLength ?? null, maxNewTokens, mode: parseFitMode(opts.fit) });
  const ids = model.formatChat(fit.text, chat).ids;
  const state = {
    outcome: null as PolicyOutcome | null,
    patch: null as ModePatch | null,
    observed: null as Float32Array | null,
    tReady: null as number | null,
    tEnd: null as number | null,
  };
  /**
   * The row's patch for the decode engine: the steering matrix, with the projection rows in clamp and ablate modes.
   * `promptResidual` null: the policy reads none (readsResidual false), so the patch is made before the first pass.
   */
  const observe = (promptResidual: Float32Array | null | undefined): Float32Array | null | { steering: Float32Array | null; inputs: Record<string, Float32Array> } => {
    if (!state.outcome) {
      if (!promptResidual && readsResidual(opts.policy, parts)) throw new Error('the model did not hand the policy the observed residual of the last prompt token');
      state.observed = promptResidual ?? null;
      state.outcome = policyMatrix(opts.policy, promptResidual ?? NO_RESIDUAL, full);
      state.patch = settings ? applySteeringSettings(state.outcome.matrix, settings, full) : { steering: state.outcome.matrix, projection: null };
      state.tReady = performance.now();
    }
    const { steering, projection } = state.patch!;
    return projection ? { steering, inputs: { [PROJECTION_INPUT]: projection } } : steering;
  };
  /** What the policy made of the observation, once generation has ended (at `tEnd` when set: a row of a batch). */
  const readouts = () => {
    const t1 = state.tEnd ?? performance.now();
    const o = state.outcome;
    const matrix = state.patch?.steering ?? null;
    return {
      scale: o?.prediction ? o.prediction.scale : null,
      layerWeights: o?.prediction ? Array.from(o.prediction.layerWeights) : null,
      rowNorms: matrix ? Array.from(rowNorms(matrix, { numLayers, hiddenSize })) : null,
      matrix,
      projection: state.patch?.projection ?? null,
      promptResidual: state.observed,
      ...(o?.cast ? { cast: o.cast } : {}),
      fit,
      specialTokens: findSpecialTokenStrings(model.tokenizer, prompt),
      timings: {
        observe_ms: state.tReady === null ? null : state.tReady - t0,
        generate_ms: t1 - (state.tReady ?? t0),
        total_ms: t1 - t0,
      },
    };
  };
  return { maxNewTokens, ids, positions, observe, state, readouts };
}

/**
 * Runs the method's path for one user message. The message is first fitted into the model's context (opts.fit,
 * fit.ts), then the model's chat template is applied (the same template and token position the controller was
 * trained on: see activations.ts). One row of runFlows.
 */
export async function runFlow(model: SteerableModel, prompt: string, parts: Omit<MethodParts, 'numLayers' | 'hiddenSize'>, opts: FlowOptions): Promise<FlowResult> {
  const { onToken, signal, ...item } = opts;
  const [out] = await runFlows(model, parts, [{ ...item, prompt }], {
    ...(signal ? { signal } : {}),
    ...(onToken ? { onToken: (_i: number, id: number, delta: string) => onToken(id, delta) } : {}),
  });
  if (!out!.ok) throw out!.error;
  return out!.result;
}

/** One prompt of a batch of flows, with its own policy, budget, sampling (and seed) and fitting. */
export interface FlowItem
  extends Pick<FlowOptions, 'policy' | 'maxNewTokens' | 'sampling' | 'fit' | 'observeAlways' | 'settings' | 'steerPromptPositions' | 'allowSpecialTokens'> {
  prompt: string;
  /**
   * The unsteered prefix cache of this prompt from an earlier decode (FlowOutcome.prefix): the item's prefill is not
   * run again (decode.ts DecodeRow.prefix: used only for the same prompt ids; the tokens do not change).
   */
  prefix?: PromptPrefix | null;
}

/**
 * What the items of one batch share: the abort signal, the token stream, and the positions the patch covers for
 * items that name none themselves (neither steerPromptPositions nor settings).
 */
export interface FlowBatchOptions {
  steerPromptPositions?: SteerPositions;
  signal?: AbortSignal;
  /** Each new token of item `item` with the text it adds to that item's reply. */
  onToken?: (item: number, tokenId: number, textDelta: string) => void;
  /** Hand back each item's unsteered prompt prefix cache (FlowOutcome.prefix; decode.ts DecodeOptions.keepPrefix). */
  keepPrefix?: boolean;
}

/**
 * An item's flow, or why it could not run (its prompt does not fit, its policy lacks a part ...). With keepPrefix,
 * `prefix` is the unsteered cache of its prompt minus the last token, for scoring the reply without running the prompt
 * again (absent where the engine ran no such prefill).
 */
export type FlowOutcome = { ok: true; result: FlowResult; prefix?: PromptPrefix } | { ok: false; error: unknown };

/**
 * runFlow for several prompts at once: every item that can run is decoded in ONE call of the decode engine
 * (SteerableModel.decode: B rows per forward pass, per-row steering matrix, sampling stream and stop), so an item's
 * tokens are the ones runFlow gives it alone (greedy and seeded sampling: each row draws from its own stream).
 * Items with the same prompt (the conditions of one eval prompt) share its prefill and observation.
 * An item that cannot be prepared gets its error and the rest run; if the batched decode itself fails, each item is
 * run alone so the error lands on the item that caused it. Timings are per item within the batch's wall time
 * (observe_ms: until its matrix was ready; total_ms: until its last token).
 */
export async function runFlows(
  model: SteerableModel,
  parts: Omit<MethodParts, 'numLayers' | 'hiddenSize'>,
  items: readonly FlowItem[],
  opts: FlowBatchOptions = {},
): Promise<FlowOutcome[]> {
  const t0 = performance.now();
  const outcomes: FlowOutcome[] = new Array(items.length);
  type Ready = { k: number; flow: ReturnType<typeof prepareFlow>; row: DecodeRow };
  // One decode call per steered-positions value (the engine takes them per call); most batches have one.
  const byPositions = new Map<SteerPositions, Ready[]>();
  items.forEach((item, k) => {
    try {
      const own = item.steerPromptPositions === undefined && !item.settings && opts.steerPromptPositions ? { ...item, steerPromptPositions: opts.steerPromptPositions } : item;
      const flow = prepareFlow(model, item.prompt, parts, own, t0);
      checkPrompt(flow.ids, model.vocabSize, model.contextLength);
      const steered = item.policy.kind !== 'off';
      const observed = steered ? readsResidual(item.policy, parts) : item.observeAlways !== false && !!parts.controller;
      // a policy that reads no residual gets its patch now (an error, e.g. a missing direction, lands on the item)
      const fixed = steered && !observed ? flow.observe(null) : null;
      const row: DecodeRow = {
        ids: flow.ids,
        maxNewTokens: flow.maxNewTokens,
        steering: observed ? { observe: (r: Float32Array) => flow.observe(r) } : fixed instanceof Float32Array || fixed === null ? fixed : fixed.steering,
        ...(fixed && !(fixed instanceof Float32Array) ? { inputs: fixed.inputs } : {}),
        sampling: item.sampling ?? null,
        ...(item.prefix ? { prefix: item.prefix } : {}),
      };
      const group = byPositions.get(flow.positions);
      if (group) group.push({ k, flow, row });
      else byPositions.set(flow.positions, [{ k, flow, row }]);
    } catch (error) {
      outcomes[k] = { ok: false, error };
    }
  });
  for (const [positions, ready] of byPositions) {
    const deltas = ready.map(() => new TextDeltas((ids) => replyText(model.tokenizer, ids)));
    let results;
    try {
      results = await model.decode(
        ready.map((r) => r.row),
        {
          steerPromptPositions: positions,
          ...(opts.signal ? { signal: opts.signal } : {}),
          ...(opts.keepPrefix ? { keepPrefix: true } : {}),
          onToken: (b, id) => {
            ready[b]!.flow.state.tEnd = performance.now();
            if (opts.onToken) opts.onToken(ready[b]!.k, id, deltas[b]!.push(id));
          },
        },
      );
    } catch (error) {
      if (ready.length === 1 || opts.signal?.aborted) {
        for (const r of ready) outcomes[r.k] = { ok: false, error };
        continue;
      }
      for (const r of ready) outcomes[r.k] = (await runFlows(model, parts, [items[r.k]!], { ...opts, ...(opts.onToken ? { onToken: (_i, id, d) => opts.onToken!(r.k, id, d) } : {}) }))[0]!;
      continue;
    }
    const tEnd = performance.now();
    results.forEach((d, b) => {
      const { flow, k } = ready[b]!;
      flow.state.tEnd ??= tEnd;
      outcomes[k] = { ok: true, result: { text: replyText(model.tokenizer, d.tokenIds), tokenIds: d.tokenIds, finishReason: d.finishReason, ...flow.readouts() }, ...(d.prefix ? { prefix: d.prefix } : {}) };
    });
  }
  return outcomes;
}

export interface CompareFlowOptions extends Omit<FlowOptions, 'onToken' | 'observeAlways'> {
  /** Each generated token of a running row: row 0 = base (no patch), row 1 = steered. */
  onToken?: (row: number, tokenId: number, textDelta: string) => void;
  /** One heat-strip row [L] per steered token as it is generated (needs a direction): see directionHeat. */
  onHeatRow?: (index: number, row: Float32Array) => void;
}

export type Reply = Pick<FlowResult, 'text' | 'tokenIds' | 'finishReason'>;

export interface CompareFlowResult extends Omit<FlowResult, 'text' | 'tokenIds' | 'finishReason'> {
  base: Reply;
  steered: Reply;
  /** [T, L] heat strip of the steered reply (directionHeat), or null without a direction. */
  heat: Float32Array | null;
}

/**
 * Base and steered replies side by side: the prompt is observed once, the policy's matrix computed once, and both
 * replies come from one batch-2 call of the decode engine (row 0 without patch, row 1 with it: SteerableModel.decode;
 * the rows share the prompt's prefill). Row 1 is what runFlow generates with the same policy; row 0 what it generates
 * with policy 'off'.
 */
export async function compareFlow(
  model: SteerableModel,
  prompt: string,
  parts: Omit<MethodParts, 'numLayers' | 'hiddenSize'>,
  opts: CompareFlowOptions,
): Promise<CompareFlowResult> {
  const f = prepareFlow(model, prompt, parts, opts);
  checkPrompt(f.ids, model.vocabSize, model.contextLength);
  const { numLayers: L, hiddenSize: H } = model;
  const d = parts.direction ?? null;
  const row = { ids: f.ids, maxNewTokens: f.maxNewTokens, sampling: opts.sampling ?? null };
  const deltas = [0, 1].map(() => new TextDeltas((ids) => replyText(model.tokenizer, ids)));
  // Both rows observe (the engine runs the shared prompt's prefill and observation once); row 0 is never patched
  // (neither steering nor projection rows), row 1 gets the whole patch of the settings.
  const [base, steered] = await model.decode(
    [
      { ...row, steering: { observe: (r: Float32Array) => (f.observe(r), null) } },
      { ...row, steering: { observe: (r: Float32Array) => f.observe(r) }, capture: d ? 'all' : 'none' },
    ],
    {
      steerPromptPositions: f.positions,
      ...(opts.signal ? { signal: opts.signal } : {}),
      onToken: (b, id) => {
        const delta = deltas[b]!.push(id);
        opts.onToken?.(b, id, delta);
      },
      ...(d && opts.onHeatRow ? { onResidual: (b: number, i: number, res: Float32Array) => b === 1 && opts.onHeatRow!(i, directionHeat(res, d, L, H)) } : {}),
    },
  );
  const reply = (g: DecodeResult): Reply => ({ text: replyText(model.tokenizer, g.tokenIds), tokenIds: g.tokenIds, finishReason: g.finishReason });
  return {
    base: reply(base!),
    steered: reply(steered!),
    heat: d && steered!.tokenResiduals ? directionHeat(steered!.tokenResiduals, d, L, H) : null,
    ...f.readouts(),
  };
}

/**
 * The heat strip the lab draws: cos(residual after layer l, d) for each token row t and decoder layer l, [T, L].
 * `residuals` is [T, L+1, H] (residual index l + 1 is the output of layer l, with its steering row).
 */
export function directionHeat(residuals: Float32Array, direction: Float32Array, numLayers: number, hiddenSize: number): Float32Array {
  const stride = (numLayers + 1) * hiddenSize;
  if (residuals.length % stride !== 0) throw new RangeError(`residuals have ${residuals.length} values, not a multiple of (L+1) x H = ${stride}`);
  if (direction.length !== hiddenSize) throw new RangeError(`direction has ${direction.length} values, expected hidden ${hiddenSize}`);
  const T = residuals.length / stride;
  const out = new Float32Array(T * numLayers);
  for (let t = 0; t < T; t++) {
    for (let l = 0; l < numLayers; l++) {
      const start = t * stride + (l + 1) * hiddenSize;
      const c = cosine(residuals.subarray(start, start + hiddenSize), direction);
      out[t * numLayers + l] = Number.isFinite(c) ? c : 0;
    }
  }
  return out;
}
