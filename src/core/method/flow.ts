/**
 * The method in one path (Hegazy et al., "Guiding Giants"), for one prompt:
 *
 *   prompt -(chat template, generation prompt)-> observe pass without steering
 *     -> residual of the LAST prompt token at every layer ([L+1, H], index l+1 = output of layer l)
 *     -> rows of the controller's input layers, concatenated -> controller -> (s, w)
 *     -> policy (was / uniform / manual / actadd / cast / off) -> steering matrix [L, H]
 *     -> generation with the patch on the last prompt token and every new token.
 *
 * No second prefill: SteerableModel.generate() prefills all but the last prompt token unsteered, observes the last
 * token on that cache and hands its residual to our SteeringPolicy callback before the first steered pass (see
 * src/core/model/generate.ts). The matrix is computed once, at step 0, and reused for every later pass, as in the
 * paper (s, w are computed once from the prompt).
 */
import type { ControllerNetwork } from '../controller/network.js';
import type { ControllerMetadata } from '../controller/metadata.js';
import type { SteerableModel } from '../model/steerable.js';
import type { SamplingOptions, SteeringContext as ModelStepContext } from '../model/types.js';
import { castDecision } from '../steering/cast.js';
import { fitDepsFromTokenizer, fitPrompt, parseFitMode, type FitMode, type FitResult } from './fit.js';
import { rowNorms } from '../steering/matrix.js';
import { steeringMatrix, type ControllerPrediction, type SteeringPolicy } from '../steering/policies.js';
import { applySteeringSettings, validateSteeringSettings, type ModePatch, type SteeringSettings } from '../steering/modes.js';

/** A controller ready for inference: its network and the layers it reads. */
export interface MethodController {
  network: ControllerNetwork;
  /** Decoder-layer indices whose OUTPUT residual (index l+1) forms the input, ascending (controller metadata). */
  inputLayers: number[];
  metadata?: ControllerMetadata;
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
export function controllerInput(residual: Float32Array, inputLayers: readonly number[], numLayers: number, hiddenSize: number): Float32Array {
  const L1H = (numLayers + 1) * hiddenSize;
  if (residual.length !== L1H) throw new RangeError(`residual has ${residual.length} values, expected [L+1 = ${numLayers + 1}, H = ${hiddenSize}]`);
  const out = new Float32Array(inputLayers.length * hiddenSize);
  inputLayers.forEach((l, i) => {
    if (!Number.isSafeInteger(l) || l < 0 || l >= numLayers) throw new RangeError(`controller input layer ${l} is not a decoder layer in 0..${numLayers - 1}`);
    const k = l + 1; // output of decoder layer l
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
  /** 'last' (default, the paper's flow): last prompt token + new tokens; 'all': every prompt position too. */
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
  timings: {
    /** Prefill + observation + controller + policy: until the matrix was ready. */
    observe_ms: number | null;
    /** Steered decoding after the matrix was ready. */
    generate_ms: number;
    total_ms: number;
  };
}

/**
 * Runs the method's path for one user message. The message is first fitted into the model's context (opts.fit,
 * fit.ts), then the model's chat template is applied (the same template and token position the controller was
 * trained on: see activations.ts).
 */
export async function runFlow(model: SteerableModel, prompt: string, parts: Omit<MethodParts, 'numLayers' | 'hiddenSize'>, opts: FlowOptions): Promise<FlowResult> {
  const numLayers = model.numLayers;
  const hiddenSize = model.hiddenSize;
  const full: MethodParts = { ...parts, numLayers, hiddenSize };
  const maxNewTokens = opts.maxNewTokens ?? 64;
  // Measured with the model's own chat formatting, the same that builds the ids below.
  const fitDeps = { ...fitDepsFromTokenizer(model.tokenizer), promptTokens: (u: string) => model.formatChat(u).ids.length };
  const fit = fitPrompt(fitDeps, prompt, { contextLength: model.contextLength ?? null, maxNewTokens, mode: parseFitMode(opts.fit) });
  const ids = model.formatChat(fit.text).ids;
  const observe = opts.policy.kind !== 'off' || (opts.observeAlways !== false && !!parts.controller);
  const settings = opts.settings ? validateSteeringSettings(opts.settings, full, opts.policy.kind) : null;
  if (settings && opts.steerPromptPositions !== undefined && opts.steerPromptPositions !== settings.positions) {
    throw new Error(`steered positions given twice and different: steerPromptPositions '${opts.steerPromptPositions}', settings.positions '${settings.positions}'`);
  }
  const t0 = performance.now();
  let tReady: number | null = null;
  let outcome: PolicyOutcome | null = null;
  let patch: ModePatch | null = null;
  let observed: Float32Array | null = null;

  const policyCallback = (ctx: ModelStepContext): Float32Array | null => {
    if (!outcome) {
      if (!ctx.promptResidual) throw new Error('the model did not hand the policy the observed residual of the last prompt token');
      observed = ctx.promptResidual;
      outcome = policyMatrix(opts.policy, ctx.promptResidual, full);
      patch = settings ? applySteeringSettings(outcome.matrix, settings, full) : { steering: outcome.matrix, projection: null };
      tReady = performance.now();
    }
    return patch!.steering;
  };

  const result = await model.generate({
    inputIds: ids,
    maxNewTokens,
    steering: observe ? policyCallback : null,
    ...(settings && settings.mode !== 'add' ? { projection: () => (patch as ModePatch | null)?.projection ?? null } : {}),
    steerPromptPositions: settings?.positions ?? opts.steerPromptPositions ?? 'last',
    sampling: opts.sampling ?? null,
    ...(opts.onToken ? { onToken: opts.onToken } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  const t1 = performance.now();
  const o = outcome as PolicyOutcome | null;
  const applied = patch as ModePatch | null;
  const matrix = applied?.steering ?? null;
  return {
    text: result.text,
    tokenIds: result.tokenIds,
    finishReason: result.finishReason,
    scale: o?.prediction ? o.prediction.scale : null,
    layerWeights: o?.prediction ? Array.from(o.prediction.layerWeights) : null,
    rowNorms: matrix ? Array.from(rowNorms(matrix, { numLayers, hiddenSize })) : null,
    matrix,
    projection: applied?.projection ?? null,
    promptResidual: observed,
    ...(o?.cast ? { cast: o.cast } : {}),
    fit,
    timings: {
      observe_ms: tReady === null ? null : (tReady as number) - t0,
      generate_ms: t1 - (tReady ?? t0),
      total_ms: t1 - t0,
    },
  };
}
