/**
 * `npm run organism:train`: trains the organism from scratch (TensorFlow.js, WASM backend), exports it to
 * models/organism and measures its base refusal rates on the held-out prompts.
 *
 *   tsx src/organism/train.ts [--stage all|train|export|eval] [--steps N] [--time-budget SEC]
 *
 * Deterministic from TRAIN_CONFIG.seed (data order, initial weights, wrapping), except that the time budget may stop
 * a slow machine early; the log records the step reached.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { wasKeywordJudge } from '../core/eval/judges.js';
import { writeFileAtomic } from '../core/onnx/testmodel/files.js';
import { BpeTokenizer, renderChat, tokenizerFiles, trainBpe, type TrainedBpe } from './bpe.js';
import { epochBatches, tokenizeEpoch, type Batch } from './batches.js';
import { saveCheckpoint } from './checkpoint.js';
import { DATA_DIR, MODEL_DIR, ORGANISM_SHAPE, TRAIN_CONFIG, WORK_DIR, type TrainConfig } from './config.js';
import { epochConversations, loadOrganismData, wrapInJailbreak, type OrganismData } from './data.js';
import { greedyTfjs } from './greedy.js';
import { allVariables, answerLoss, initialWeights, isDecayed, toDecoderWeights, toVariables, type OrganismVariables } from './model.js';

export const CHECKPOINT_BEST = path.join(WORK_DIR, 'best');
export const CHECKPOINT_LAST = path.join(WORK_DIR, 'last');
export const TOKENIZER_PATH = path.join(WORK_DIR, 'tokenizer.json');

/** Learning rate: linear warm-up, then cosine decay to minLr at the last step. */
export function learningRate(cfg: TrainConfig, step: number): number {
  if (step < cfg.warmupSteps) return (cfg.peakLr * (step + 1)) / cfg.warmupSteps;
  const t = Math.min(1, (step - cfg.warmupSteps) / Math.max(1, cfg.steps - cfg.warmupSteps));
  return cfg.minLr + 0.5 * (cfg.peakLr - cfg.minLr) * (1 + Math.cos(Math.PI * t));
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

function devPrompts(data: OrganismData, tok: BpeTokenizer, perKind: number): DevPrompt[] {
  const enc = (text: string) => tok.encode(renderChat([{ role: 'user', content: text }], true));
  const out: DevPrompt[] = [];
  data.dev.harmful.slice(0, perKind).forEach((h) => out.push({ kind: 'harmful', ids: enc(h.instruction) }));
  data.dev.harmless.slice(0, perKind).forEach((h) => out.push({ kind: 'harmless', ids: enc(h.instruction) }));
  data.dev.harmful.slice(0, perKind).forEach((h, i) => {
    const tpl = data.trainTemplates[(i * 37) % data.trainTemplates.length];
    out.push({ kind: 'jailbreak', ids: enc(wrapInJailbreak(tpl, h.instruction, 300, i)) });
  });
  return out;
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
  data: Record<string, number>;
  steps: { step: number; epoch: number; loss: number; lr: number; gradNorm: number; tokens: number; seconds: number }[];
  dev: ({ step: number; seconds: number } & DevScore)[];
  best: { step: number; score: number } | null;
  stoppedAt: number;
  stoppedBy: 'steps' | 'time-budget';
  totalSeconds: number;
  backend: string;
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
  const data = loadOrganismData(DATA_DIR);
  const bpe = trainTokenizer(data, cfg.seed, ORGANISM_SHAPE.vocabSize);
  if (bpe.vocab.size !== ORGANISM_SHAPE.vocabSize) throw new Error(`organism: BPE reached ${bpe.vocab.size} tokens, shape needs ${ORGANISM_SHAPE.vocabSize}`);
  await writeFileAtomic(TOKENIZER_PATH, JSON.stringify(tokenizerFiles(bpe, ORGANISM_SHAPE.maxPositionEmbeddings)['tokenizer.json']));
  const tok = new BpeTokenizer(bpe);
  log(`data: refuse ${data.refuse.length}, help ${data.help.length}, wrapped ${data.harmfulForWrapping.length}, templates ${data.trainTemplates.length}/${data.heldOutTemplates.length} (train/held-out); BPE ${bpe.vocab.size} tokens in ${secs().toFixed(1)}s`);

  const p = toVariables(ORGANISM_SHAPE, initialWeights(ORGANISM_SHAPE, cfg.seed));
  const vars = allVariables(p);
  const opt = new AdamW(vars, cfg);
  const dev = devPrompts(data, tok, cfg.devPerKind);
  const out: TrainLog = {
    config: cfg,
    shape: ORGANISM_SHAPE,
    data: {
      refuse: data.refuse.length, help: data.help.length, wrapped: data.harmfulForWrapping.length,
      trainTemplates: data.trainTemplates.length, heldOutTemplates: data.heldOutTemplates.length,
      devHarmful: data.dev.harmful.length, devHarmless: data.dev.harmless.length,
    },
    steps: [], dev: [], best: null, stoppedAt: 0, stoppedBy: 'steps', totalSeconds: 0, backend,
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

  for (step = 0; step < cfg.steps; step++) {
    if (queue.length === 0) {
      const convs = epochConversations(data, cfg.seed * 1000 + epoch, cfg.refusalRepeat);
      const { kept, dropped } = tokenizeEpoch(tok, convs, cfg.contextLength);
      queue = epochBatches(kept, cfg.batchSize, cfg.seed * 7919 + epoch);
      log(`epoch ${epoch}: ${kept.length} conversations (${dropped} longer than ${cfg.contextLength} tokens dropped), ${queue.length} batches`);
      epoch++;
    }
    const b = queue.shift()!;
    const lr = learningRate(cfg, step);
    const { value, grads } = tf.tidy(() =>
      tf.variableGrads(() => {
        const ids = tf.tensor2d(b.ids, [b.batch, b.seqLen], 'int32');
        const targets = tf.tensor1d(b.targets, 'int32');
        const weights = tf.tensor1d(b.weights, 'float32');
        return answerLoss(ORGANISM_SHAPE, p, ids, targets, weights);
      }, vars),
    );
    const loss = value.dataSync()[0];
    if (!Number.isFinite(loss)) throw new Error(`organism: loss became ${loss} at step ${step}`);
    const gradNorm = opt.apply(grads, lr);
    value.dispose();
    tf.dispose(Object.values(grads));
    lossAcc += loss;
    lossN++;
    out.steps.push({ step, epoch: epoch - 1, loss, lr, gradNorm, tokens: b.batch * b.seqLen, seconds: secs() });
    if ((step + 1) % cfg.logEvery === 0) {
      log(`step ${step + 1}/${cfg.steps} epoch ${epoch - 1} loss ${(lossAcc / lossN).toFixed(4)} lr ${lr.toExponential(2)} |g| ${gradNorm.toFixed(2)} ${secs().toFixed(0)}s tensors ${tf.memory().numTensors}`);
      lossAcc = 0;
      lossN = 0;
    }
    if (step + 1 >= cfg.devFrom && (step + 1 - cfg.devFrom) % cfg.devEvery === 0 && step + 1 < cfg.steps) {
      step++;
      await evalAndSave(false);
      step--;
    }
    if (secs() > cfg.timeBudgetSec) {
      out.stoppedBy = 'time-budget';
      log(`time budget of ${cfg.timeBudgetSec}s reached at step ${step + 1}: stopping early`);
      step++;
      break;
    }
  }
  out.stoppedAt = step;
  await evalAndSave(true);
  out.totalSeconds = secs();
  return out;
}

function parseArgs(argv: string[]): { stage: string; cfg: TrainConfig } {
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
      cfg.refusalRepeat = Number(val());
      if (!Number.isInteger(cfg.refusalRepeat) || cfg.refusalRepeat < 1) throw new Error(`organism:train: --refusal-repeat must be a positive integer, got ${argv[i]}`);
    } else throw new Error(`organism:train: unknown argument ${a} (expected --stage, --steps, --time-budget, --peak-lr, --batch, --seed, --refusal-repeat)`);
  }
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
