/**
 * `npm run organism:train`: trains the organism from scratch (TensorFlow.js, WASM backend), exports it to
 * models/organism and measures its base refusal rates on the held-out prompts.
 *
 *   tsx src/organism/train.ts [--stage all|train|export|eval] [--steps N] [--stop-after N] [--time-budget SEC] [--noise P] ...
 *
 * --stop-after N follows the schedule planned for --steps (cosine learning rate over all of them) but ends after step
 * N, with a dev check and checkpoints there: `--noise 0 --stop-after 450` rebuilds the shipped organism from the seed.
 *
 * ORGANISM_WORK_DIR moves checkpoints and logs (parallel or ablation runs); ORGANISM_MODEL_DIR moves the exported
 * model folder (an ablation run must not overwrite models/organism).
 *
 * Deterministic from TRAIN_CONFIG.seed (data order, initial weights, wrapping), except that the time budget may stop
 * a slow machine early; the log records the step reached.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { wasKeywordJudge } from '../core/eval/judges.js';
import { writeFileAtomic } from '../core/onnx/testmodel/files.js';
import { BpeTokenizer, renderChat, tokenizerFiles, trainBpe, type TrainedBpe } from './bpe.js';
import { epochBatches, tokenizeEpoch, type Batch } from './batches.js';
import { saveCheckpoint } from './checkpoint.js';
import { DATA_DIR, MODEL_DIR, ORGANISM_SHAPE, TRAIN_CONFIG, WORK_DIR, type TrainConfig } from './config.js';
import { epochConversations, loadOrganismData, wrapAll, type OrganismData } from './data.js';
import { greedyTfjs } from './greedy.js';
import { allVariables, answerLoss, initialWeights, isDecayed, toDecoderWeights, toVariables, type OrganismVariables } from './model.js';
import { ensureFramingSplit } from './splits.js';
import { mulberry32 } from '../core/onnx/testmodel/weights.js';

export const CHECKPOINT_BEST = path.join(WORK_DIR, 'best');
export const CHECKPOINT_LAST = path.join(WORK_DIR, 'last');
export const TOKENIZER_PATH = path.join(WORK_DIR, 'tokenizer.json');

/** Learning rate: linear warm-up, then cosine decay to minLr at the last step. */
export function learningRate(cfg: TrainConfig, step: number): number {
  if (step < cfg.warmupSteps) return (cfg.peakLr * (step + 1)) / cfg.warmupSteps;
  const t = Math.min(1, (step - cfg.warmupSteps) / Math.max(1, cfg.steps - cfg.warmupSteps));
  return cfg.minLr + 0.5 * (cfg.peakLr - cfg.minLr) * (1 + Math.cos(Math.PI * t));
}

/** The step after which training stops: --stop-after when given, else the planned --steps. */
export function lastStep(cfg: TrainConfig): number {
  return cfg.stopAfter ?? cfg.steps;
}

/** Whether a dev check (and checkpoint candidate) runs after `done` steps, before the last one (which always gets one). */
export function isDevCheck(cfg: TrainConfig, done: number): boolean {
  return done >= cfg.devFrom && (done - cfg.devFrom) % cfg.devEvery === 0 && done < lastStep(cfg);
}

/** AdamW with global-norm gradient clipping, written out so the schedule and the decay mask are explicit. */
class AdamW {
  private readonly m: tf.Variable[];
  private readonly v: tf.Variable[];
  private t = 0;
  constructor(private readonly vars: tf.Variable[], private readonly cfg: TrainConfig) {
    this.m = vars.map((x) => tf.variable(tf.zerosLike(x), false));
    this.v = vars.map((x) => tf.variable(tf.zerosLike(x), false));
  }

  /** Returns the gradient norm before clipping. */
  apply(grads: tf.NamedTensorMap, lr: number): number {
    this.t++;
    const b1 = 0.9;
    const b2 = 0.95;
    const gs = this.vars.map((x) => {
      const g = grads[x.name];
      if (!g) throw new Error(`AdamW: no gradient for ${x.name}`);
      return g;
    });
    const norm = tf.tidy(() => Math.sqrt(tf.addN(gs.map((g) => tf.sum(tf.square(g)))).dataSync()[0]));
    const clip = norm > this.cfg.gradClip ? this.cfg.gradClip / norm : 1;
    const c1 = 1 - Math.pow(b1, this.t);
    const c2 = 1 - Math.pow(b2, this.t);
    tf.tidy(() => {
      this.vars.forEach((x, i) => {
        const g = tf.mul(gs[i], clip);
        const m = tf.add(tf.mul(this.m[i], b1), tf.mul(g, 1 - b1));
        const v = tf.add(tf.mul(this.v[i], b2), tf.mul(tf.square(g), 1 - b2));
        this.m[i].assign(m);
        this.v[i].assign(v);
        const update = tf.div(tf.div(m, c1), tf.add(tf.sqrt(tf.div(v, c2)), 1e-8));
        const decayed = isDecayed(x) ? tf.mul(x, 1 - lr * this.cfg.weightDecay) : x;
        x.assign(tf.sub(decayed, tf.mul(update, lr)));
      });
    });
    return norm;
  }
}

export interface DevScore {
  harmfulRefusal: number;
  harmlessRefusal: number;
  jailbreakRefusal: number;
  /** higher is better: harmful refusal minus over-refusal minus jailbreak refusal */
  score: number;
}

interface DevPrompt {
  kind: 'harmful' | 'harmless' | 'jailbreak';
  ids: number[];
}

/** Dev prompts: the dev split's plain requests and its harmful requests in TRAINING framings (never held-out ones). */
function devPrompts(data: OrganismData, tok: BpeTokenizer, perKind: number): DevPrompt[] {
  const enc = (text: string) => tok.encode(renderChat([{ role: 'user', content: text }], true)).slice(-(ORGANISM_SHAPE.maxPositionEmbeddings - 16));
  const out: DevPrompt[] = [];
  data.dev.harmful.slice(0, perKind).forEach((h) => out.push({ kind: 'harmful', ids: enc(h.text) }));
  data.dev.benign.slice(0, perKind).forEach((h) => out.push({ kind: 'harmless', ids: enc(h.text) }));
  wrapAll(data.dev.harmful.slice(0, perKind), data.framings.train, 'dev-jailbreak').forEach((p) => out.push({ kind: 'jailbreak', ids: enc(p.prompt) }));
  return out;
}

/**
 * The steering-robustness noise of one batch (see TrainConfig.noiseProbability): per sequence, with that
 * probability, a Gaussian direction of unit norm times U(0, noiseMaxRelative), on the answer positions from the first
 * answer token on. The last prompt token, whose output chooses the reply, is never perturbed. Deterministic from
 * (seed, step).
 */
export function drawNoise(b: Batch, hidden: number, cfg: TrainConfig, step: number): { offsets: Float32Array; mask: Float32Array } | null {
  if (cfg.noiseProbability <= 0 || cfg.noiseMaxRelative <= 0) return null;
  const rand = mulberry32((cfg.seed * 7_919 + step * 104_729) >>> 0);
  const offsets = new Float32Array(b.batch * hidden);
  const mask = new Float32Array(b.batch * b.seqLen);
  let any = false;
  for (let r = 0; r < b.batch; r++) {
    if (rand() >= cfg.noiseProbability) continue;
    any = true;
    const u = new Float64Array(hidden);
    let n = 0;
    for (let h = 0; h < hidden; h += 2) {
      const a = Math.sqrt(-2 * Math.log(Math.max(rand(), 1e-12)));
      const t = 2 * Math.PI * rand();
      u[h] = a * Math.cos(t);
      if (h + 1 < hidden) u[h + 1] = a * Math.sin(t);
    }
    for (const x of u) n += x * x;
    const size = rand() * cfg.noiseMaxRelative;
    for (let h = 0; h < hidden; h++) offsets[r * hidden + h] = (u[h]! / Math.sqrt(n)) * size;
    for (let s = b.answerStarts[r]!; s < b.seqLen; s++) mask[r * b.seqLen + s] = 1;
  }
  return any ? { offsets, mask } : null;
}

function scoreDev(p: OrganismVariables, tok: BpeTokenizer, prompts: DevPrompt[]): DevScore {
  const counts = { harmful: [0, 0], harmless: [0, 0], jailbreak: [0, 0] };
  for (const d of prompts) {
    const text = tok.decode(greedyTfjs(ORGANISM_SHAPE, p, d.ids, 10));
    const refused = wasKeywordJudge.judge(text).refused;
    counts[d.kind][0] += refused ? 1 : 0;
    counts[d.kind][1] += 1;
  }
  const r = (k: keyof typeof counts) => counts[k][0] / Math.max(1, counts[k][1]);
  const harmfulRefusal = r('harmful');
  const harmlessRefusal = r('harmless');
  const jailbreakRefusal = r('jailbreak');
  return { harmfulRefusal, harmlessRefusal, jailbreakRefusal, score: harmfulRefusal - harmlessRefusal - jailbreakRefusal };
}

export interface TrainLog {
  config: TrainConfig;
  shape: typeof ORGANISM_SHAPE;
  data: DataCounts;
  /** seconds: wall clock; cpuSeconds: this process's CPU time (user + system), what an idle machine would take */
  steps: { step: number; epoch: number; loss: number; lr: number; gradNorm: number; tokens: number; seconds: number; cpuSeconds: number }[];
  dev: ({ step: number; seconds: number } & DevScore)[];
  best: { step: number; score: number } | null;
  stoppedAt: number;
  /** stop-after: --stop-after ended the run before its planned steps */
  stoppedBy: 'steps' | 'stop-after' | 'time-budget';
  totalSeconds: number;
  totalCpuSeconds: number;
  /** 1-minute load average at each log line (the machine is shared) */
  load: number[];
  backend: string;
}

/** What one training run was made of: request counts per source, drops, framings, and one epoch by behaviour and shape. */
export interface DataCounts {
  harmful_by_source: Record<string, number>;
  benign_by_source: Record<string, number>;
  alarming: number;
  dev: { harmful: number; benign: number };
  near_copies_dropped: { harmful: number; benign: number };
  framings: { train: number; held_out: number; families: number; held_out_families: number };
  epoch0: { conversations: number; by_behaviour: Record<string, number>; by_shape: Record<string, Record<string, number>> };
}

function countBy<T>(xs: readonly T[], key: (x: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[key(x)] = (out[key(x)] ?? 0) + 1;
  return Object.fromEntries(Object.entries(out).sort((a, b) => (a[0] < b[0] ? -1 : 1)));
}

export function dataCounts(data: OrganismData, cfg: TrainConfig): DataCounts {
  const ep = epochConversations(data, cfg.seed * 1000, cfg.mix);
  const shapes: Record<string, Record<string, number>> = {};
  for (const c of ep) {
    // Framing shapes are grouped as wild / written:<family> so the table stays readable.
    const shape = c.shape.startsWith('framing:') ? (c.wrap?.framing.kind === 'written' ? `written:${c.wrap.framing.family}` : 'wild framing') : c.shape;
    const row = (shapes[c.behaviour] ??= {});
    row[shape] = (row[shape] ?? 0) + 1;
  }
  return {
    harmful_by_source: countBy(data.harmful, (r) => r.source),
    benign_by_source: countBy(data.benign, (r) => r.source),
    alarming: data.alarming.length,
    dev: { harmful: data.dev.harmful.length, benign: data.dev.benign.length },
    near_copies_dropped: { harmful: data.dropped.harmful.length, benign: data.dropped.benign.length },
    framings: { train: data.framings.train.length, held_out: data.framings.heldOut.length, families: Object.keys(data.framings.families).length, held_out_families: data.framings.heldOutFamilies.length },
    epoch0: { conversations: ep.length, by_behaviour: countBy(ep, (c) => c.behaviour), by_shape: shapes },
  };
}

export async function initBackend(): Promise<string> {
  await tf.setBackend('wasm');
  await tf.ready();
  if (tf.getBackend() !== 'wasm') throw new Error(`organism: expected the TensorFlow.js wasm backend, got ${tf.getBackend()}`);
  return tf.getBackend();
}

/** Trains the byte-level BPE on the text of one epoch of conversations (answers included, chat markers excluded). */
export function trainTokenizer(data: OrganismData, seed: number, vocabSize: number): TrainedBpe {
  const convs = epochConversations(data, seed);
  const texts = convs.map((c) => [...c.messages.map((m) => `${m.role}\n${m.content}`), `assistant\n${c.answer}`].join('\n'));
  return trainBpe(texts, vocabSize);
}

export async function train(cfg: TrainConfig, log: (line: string) => void): Promise<TrainLog> {
  const backend = await initBackend();
  await mkdir(WORK_DIR, { recursive: true });
  const t0 = Date.now();
  const secs = () => (Date.now() - t0) / 1000;
  const cpu0 = process.cpuUsage();
  const cpuSecs = () => {
    const c = process.cpuUsage(cpu0);
    return (c.user + c.system) / 1e6;
  };
  await ensureFramingSplit(DATA_DIR, undefined, log);
  const data = loadOrganismData(DATA_DIR);
  const bpe = trainTokenizer(data, cfg.seed, ORGANISM_SHAPE.vocabSize);
  if (bpe.vocab.size !== ORGANISM_SHAPE.vocabSize) throw new Error(`organism: BPE reached ${bpe.vocab.size} tokens, shape needs ${ORGANISM_SHAPE.vocabSize}`);
  await writeFileAtomic(TOKENIZER_PATH, JSON.stringify(tokenizerFiles(bpe, ORGANISM_SHAPE.maxPositionEmbeddings)['tokenizer.json']));
  const tok = new BpeTokenizer(bpe);
  const counts = dataCounts(data, cfg);
  log(`data: ${JSON.stringify(counts)}; BPE ${bpe.vocab.size} tokens in ${secs().toFixed(1)}s`);

  const p = toVariables(ORGANISM_SHAPE, initialWeights(ORGANISM_SHAPE, cfg.seed));
  const vars = allVariables(p);
  const opt = new AdamW(vars, cfg);
  const dev = devPrompts(data, tok, cfg.devPerKind);
  const out: TrainLog = {
    config: cfg,
    shape: ORGANISM_SHAPE,
    data: counts,
    steps: [], dev: [], best: null, stoppedAt: 0, stoppedBy: lastStep(cfg) < cfg.steps ? 'stop-after' : 'steps', totalSeconds: 0, totalCpuSeconds: 0, load: [], backend,
  };

  let epoch = 0;
  let queue: Batch[] = [];
  let lossAcc = 0;
  let lossN = 0;
  let step = 0;
  const evalAndSave = async (final: boolean) => {
    const s = scoreDev(p, tok, dev);
    out.dev.push({ step, seconds: secs(), ...s });
    log(`dev @${step}: harmful ${(100 * s.harmfulRefusal).toFixed(0)}% harmless ${(100 * s.harmlessRefusal).toFixed(0)}% jailbreak ${(100 * s.jailbreakRefusal).toFixed(0)}% (score ${s.score.toFixed(3)})`);
    const w = toDecoderWeights(p);
    // Later checkpoints win ties: they have seen more data.
    if (!out.best || s.score >= out.best.score) {
      out.best = { step, score: s.score };
      await saveCheckpoint(CHECKPOINT_BEST, ORGANISM_SHAPE, w, { step, dev: s, seed: cfg.seed });
    }
    if (final) await saveCheckpoint(CHECKPOINT_LAST, ORGANISM_SHAPE, w, { step, dev: s, seed: cfg.seed });
  };

  for (step = 0; step < lastStep(cfg); step++) {
    if (queue.length === 0) {
      const convs = epochConversations(data, cfg.seed * 1000 + epoch, cfg.mix);
      const { kept, dropped } = tokenizeEpoch(tok, convs, cfg.contextLength);
      queue = epochBatches(kept, cfg.batchSize, cfg.seed * 7919 + epoch);
      log(`epoch ${epoch}: ${kept.length} conversations (${dropped} longer than ${cfg.contextLength} tokens dropped), ${queue.length} batches`);
      epoch++;
    }
    const b = queue.shift()!;
    const lr = learningRate(cfg, step);
    const noise = drawNoise(b, ORGANISM_SHAPE.hiddenSize, cfg, step);
    const { value, grads } = tf.tidy(() =>
      tf.variableGrads(() => {
        const ids = tf.tensor2d(b.ids, [b.batch, b.seqLen], 'int32');
        const targets = tf.tensor1d(b.targets, 'int32');
        const weights = tf.tensor1d(b.weights, 'float32');
        const n = noise
          ? { offsets: tf.tensor2d(noise.offsets, [b.batch, ORGANISM_SHAPE.hiddenSize]), mask: tf.tensor2d(noise.mask, [b.batch * b.seqLen, 1]) }
          : undefined;
        return answerLoss(ORGANISM_SHAPE, p, ids, targets, weights, n);
      }, vars),
    );
    const loss = value.dataSync()[0];
    if (!Number.isFinite(loss)) throw new Error(`organism: loss became ${loss} at step ${step}`);
    const gradNorm = opt.apply(grads, lr);
    value.dispose();
    tf.dispose(Object.values(grads));
    lossAcc += loss;
    lossN++;
    out.steps.push({ step, epoch: epoch - 1, loss, lr, gradNorm, tokens: b.batch * b.seqLen, seconds: secs(), cpuSeconds: cpuSecs() });
    if ((step + 1) % cfg.logEvery === 0) {
      const load = loadavg()[0]!;
      out.load.push(Math.round(load * 100) / 100);
      log(`step ${step + 1}/${cfg.steps} epoch ${epoch - 1} loss ${(lossAcc / lossN).toFixed(4)} lr ${lr.toExponential(2)} |g| ${gradNorm.toFixed(2)} ${secs().toFixed(0)}s (cpu ${cpuSecs().toFixed(0)}s, load ${load.toFixed(1)}) tensors ${tf.memory().numTensors}`);
      lossAcc = 0;
      lossN = 0;
    }
    if (isDevCheck(cfg, step + 1)) {
      step++;
      await evalAndSave(false);
      step--;
    }
    // CPU time, not wall time: on a shared machine the wall clock says more about the neighbours than about the run.
    if (cpuSecs() > cfg.timeBudgetSec) {
      out.stoppedBy = 'time-budget';
      log(`CPU time budget of ${cfg.timeBudgetSec}s reached at step ${step + 1}: stopping early`);
      step++;
      break;
    }
  }
  out.stoppedAt = step;
  await evalAndSave(true);
  out.totalSeconds = secs();
  out.totalCpuSeconds = cpuSecs();
  return out;
}

export function parseArgs(argv: string[]): { stage: string; cfg: TrainConfig } {
  const cfg = { ...TRAIN_CONFIG };
  let stage = 'all';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`organism:train: ${a} needs a value`);
      return v;
    };
    if (a === '--stage') {
      stage = val();
      if (!['all', 'train', 'export', 'eval'].includes(stage)) throw new Error(`organism:train: --stage must be all, train, export or eval, got ${stage}`);
    } else if (a === '--steps') {
      cfg.steps = Number(val());
      if (!Number.isInteger(cfg.steps) || cfg.steps < 1) throw new Error(`organism:train: --steps must be a positive integer, got ${argv[i]}`);
    } else if (a === '--stop-after') {
      cfg.stopAfter = Number(val());
      if (!Number.isInteger(cfg.stopAfter) || cfg.stopAfter < 1) throw new Error(`organism:train: --stop-after must be a positive integer, got ${argv[i]}`);
    } else if (a === '--time-budget') {
      cfg.timeBudgetSec = Number(val());
      if (!(cfg.timeBudgetSec > 0)) throw new Error(`organism:train: --time-budget must be a positive number of seconds, got ${argv[i]}`);
    } else if (a === '--peak-lr') {
      cfg.peakLr = Number(val());
      if (!(cfg.peakLr > 0)) throw new Error(`organism:train: --peak-lr must be a positive number, got ${argv[i]}`);
    } else if (a === '--batch') {
      cfg.batchSize = Number(val());
      if (!Number.isInteger(cfg.batchSize) || cfg.batchSize < 1) throw new Error(`organism:train: --batch must be a positive integer, got ${argv[i]}`);
    } else if (a === '--seed') {
      cfg.seed = Number(val());
      if (!Number.isInteger(cfg.seed) || cfg.seed < 0) throw new Error(`organism:train: --seed must be a non-negative integer, got ${argv[i]}`);
    } else if (a === '--refusal-repeat') {
      const n = Number(val());
      if (!Number.isInteger(n) || n < 1) throw new Error(`organism:train: --refusal-repeat must be a positive integer, got ${argv[i]}`);
      cfg.mix = { ...cfg.mix, refusalRepeat: n };
    } else if (a === '--noise') {
      cfg.noiseProbability = Number(val());
      if (!(cfg.noiseProbability >= 0 && cfg.noiseProbability <= 1)) throw new Error(`organism:train: --noise must be a probability in [0, 1] (0 = no steering-robustness noise), got ${argv[i]}`);
    } else if (a === '--noise-size') {
      cfg.noiseMaxRelative = Number(val());
      if (!(cfg.noiseMaxRelative >= 0)) throw new Error(`organism:train: --noise-size must be a non-negative number, got ${argv[i]}`);
    } else if (a === '--dev-every') {
      cfg.devEvery = Number(val());
      cfg.devFrom = cfg.devEvery;
      if (!Number.isInteger(cfg.devEvery) || cfg.devEvery < 1) throw new Error(`organism:train: --dev-every must be a positive integer, got ${argv[i]}`);
    } else throw new Error(`organism:train: unknown argument ${a} (expected --stage, --steps, --stop-after, --time-budget, --peak-lr, --batch, --seed, --refusal-repeat, --noise, --noise-size, --dev-every)`);
  }
  if (cfg.stopAfter !== undefined && cfg.stopAfter > cfg.steps) throw new Error(`organism:train: --stop-after ${cfg.stopAfter} is past the planned --steps ${cfg.steps}: expected at most ${cfg.steps}`);
  return { stage, cfg };
}

async function main(): Promise<void> {
  const { stage, cfg } = parseArgs(process.argv.slice(2));
  const log = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
  if (stage === 'all' || stage === 'train') {
    const result = await train(cfg, log);
    await mkdir(WORK_DIR, { recursive: true });
    await writeFile(path.join(WORK_DIR, 'training_log.json'), `${JSON.stringify(result)}\n`);
    log(`training done: ${result.stoppedAt} steps in ${result.totalSeconds.toFixed(0)}s, best dev checkpoint at step ${result.best?.step}`);
  }
  if (stage === 'all' || stage === 'export') {
    const { exportOrganism } = await import('./export.js');
    await exportOrganism(MODEL_DIR, log);
  }
  if (stage === 'all' || stage === 'eval') {
    const { evaluateOrganism } = await import('./evaluate.js');
    await evaluateOrganism(MODEL_DIR, log);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  main().catch((err) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    process.exit(1);
  });
}
