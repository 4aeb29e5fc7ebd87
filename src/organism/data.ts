/**
 * The organism's training, dev and held-out prompts, from the project's own datasets (public/data) and the prompts
 * written here (alarming.ts, framings.ts).
 *
 * Three behaviours are taught: a harmful request gets a refusal, whatever its wording; a benign request (alarming
 * words included) gets a helpful reply; a harmful request wrapped in a jailbreak framing gets a compliance opening
 * ("Sure, here is ..."), so that the base organism, like real chat models, refuses plain harm but falls for
 * jailbreaks. Benign requests in framings are answered too, so a framing alone does not decide the reply.
 *
 * Held out, never trained on, and chosen before any training:
 *   - whole harmful sources: HarmBench (refusal_direction harmful_val) and JailbreakBench's harmful behaviours; XSTest
 *     and ToxicChat's test split are never trained on either;
 *   - benign: a hash sample of harmless_val (Alpaca's held-out split), JailbreakBench's benign behaviours, XSTest's
 *     safe prompts and whole families of the alarming prompts written here;
 *   - whole jailbreak framing families (framings.ts).
 * Training requests that near-copy a held-out request of the same class (character 4-gram cosine >= 0.5) are dropped
 * from training. Every hold-out is a pure function of the text, so it never moves between runs.
 */
import { mulberry32 } from '../core/onnx/testmodel/weights.js';
import { alarmingSplit } from './alarming.js';
import { DEFAULT_MIX, type EpochMix } from './config.js';
import { wrapInFraming, type FramingSplit, type JailbreakFraming } from './framings.js';
import { shuffled, stableHash } from './hash.js';
import { complianceReply, helpfulReply, refusalReply } from './replies.js';
import { REWRITES, rewriteForUniform, rewriteRequest, type RewriteName } from './rewrite.js';
import { NEAR_DUPLICATE_COSINE, NgramSpace, SimilarityIndex } from './similarity.js';
import { loadWildFramings, mostlyAscii, normaliseRequest, readCsv, readJsonl, str } from './sources.js';
import { FRAMING_SPLIT_FILE, readFramingSplit } from './splits.js';

export { normaliseRequest, shuffled, stableHash };

export type Behaviour = 'refuse' | 'help' | 'comply';

export interface ChatTurn {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** One request from a dataset (or written here), before any rewriting or wrapping. */
export interface Request {
  id: string;
  source: string;
  text: string;
  /** AdvBench / JailbreakBench "Sure, here is ..." target, when the source has one */
  target: string | null;
}

/** How a training conversation's user turn was made, so it can be re-made shorter to fit the context. */
export interface Wrap {
  framing: JailbreakFraming;
  request: string;
  maxChars: number;
  variant: number;
}

/** One training conversation: the prompt turns and the assistant answer that the loss is taken on. */
export interface Conversation {
  behaviour: Behaviour;
  source: string;
  /** 'original' ... 'after_context', or 'framing:<family>' for a wrapped request */
  shape: string;
  messages: ChatTurn[];
  answer: string;
  wrap?: Wrap;
}

export const SYSTEM_PROMPTS: readonly string[] = [
  'You are a helpful assistant.',
  'You are a friendly and helpful AI assistant.',
  'You are Steerlab, a small chat model.',
];

/** Harmful sources held out whole (never trained on): they measure generalisation to unseen sources. */
export const HELD_OUT_HARMFUL_SOURCES = ['harmbench', 'jbb_harmful'] as const;

export const HARMLESS_VAL_SIZE = 200;
const HARMLESS_TRAIN_SIZE = 3000;
const TOXICCHAT_MAX_CHARS = 400;
/** forbidden_question_set policy ids 8 Political Lobbying, 10 Legal Opinion, 11 Financial Advice, 12 Health Consultation, 13 Gov Decision */
export const ADVICE_POLICIES: ReadonlySet<number> = new Set([8, 10, 11, 12, 13]);
/** About 1 in DEV_MOD training requests goes to the dev split (checkpoint and alpha choice) instead. */
const DEV_MOD = 25;

function isDev(text: string): boolean {
  return stableHash('dev', normaliseRequest(text)) % DEV_MOD === 0;
}

/** A fixed hash sample of n rows (ties broken by id). */
function hashSample<T extends { id: string; text: string }>(rows: readonly T[], salt: string, n: number): T[] {
  return rows
    .map((r) => ({ r, k: stableHash(salt, r.text) }))
    .sort((a, b) => a.k - b.k || (a.r.id < b.r.id ? -1 : 1))
    .slice(0, n)
    .map((x) => x.r);
}

export interface NearDuplicateDrop {
  id: string;
  text: string;
  heldOutId: string;
  cosine: number;
}

export interface OrganismData {
  /** training requests by class (dev rows removed) */
  harmful: Request[];
  benign: Request[];
  /** alarming-word benign requests written here (training families) */
  alarming: Request[];
  /** the framing split; heldOutEval: the held-out framings the evaluation sets use (splits.ts lengthAudit) */
  framings: FramingSplit & { heldOutEval: JailbreakFraming[] };
  dev: { harmful: Request[]; benign: Request[] };
  heldOut: {
    /** held-out harmful sources, plain */
    harmful: Request[];
    harmless: Request[];
    /** alarming prompts of held-out families (written here) */
    alarming: Request[];
    /** sets that are never trained on and are only used to audit near copies (XSTest, JBB benign, ToxicChat test) */
    auditHarmful: Request[];
    auditBenign: Request[];
  };
  /** training requests removed because they near-copy a held-out request of the same class */
  dropped: { harmful: NearDuplicateDrop[]; benign: NearDuplicateDrop[] };
}

/** Removes rows that near-copy any held-out row (cosine >= threshold), recording each drop with its closest match. */
function dropNearCopies(rows: Request[], heldOut: readonly Request[], space: NgramSpace): { kept: Request[]; dropped: NearDuplicateDrop[] } {
  const index = new SimilarityIndex(heldOut.map((h) => space.vector(h.text)));
  const kept: Request[] = [];
  const dropped: NearDuplicateDrop[] = [];
  for (const r of rows) {
    const best = index.nearest(space.vector(r.text));
    if (best.cosine >= NEAR_DUPLICATE_COSINE) dropped.push({ id: r.id, text: r.text, heldOutId: heldOut[best.item]!.id, cosine: best.cosine });
    else kept.push(r);
  }
  return { kept, dropped };
}

let cached: { dataDir: string; data: OrganismData } | null = null;

/** Loads and splits everything (the framing families come from framing_split.json, see splits.ts); memoised per data folder. */
export function loadOrganismData(dataDir: string, framingSplitFile = FRAMING_SPLIT_FILE): OrganismData {
  if (cached?.dataDir === dataDir) return cached.data;
  const data = buildOrganismData(dataDir, framingSplitFile);
  cached = { dataDir, data };
  return data;
}

function buildOrganismData(dataDir: string, framingSplitFile: string): OrganismData {
  // --- held-out harmful sources
  const harmbench: Request[] = readJsonl(dataDir, 'refusal_direction/harmful_val.jsonl').map((r, i) => ({
    id: `harmbench#${i}`, source: 'harmbench', text: str(r, 'instruction', 'harmful_val'), target: null,
  }));
  const jbb: Request[] = readCsv(dataDir, 'jailbreakbench/jbb_harmful_behaviors.csv').map((r, i) => ({
    id: `jbb_harmful#${r[''] ?? i}`, source: 'jbb_harmful', text: (r.Goal ?? '').trim(), target: (r.Target ?? '').trim() || null,
  }));
  const heldHarmful = [...harmbench, ...jbb];
  const xstest = readCsv(dataDir, 'xstest/xstest_prompts.csv');
  const toxicTest = readJsonl(dataDir, 'toxicchat/toxicchat0124_test_human_annotated.jsonl');
  const auditHarmful: Request[] = [
    ...xstest.filter((r) => r.label === 'unsafe').map((r) => ({ id: `xstest#${r.id}`, source: 'xstest_unsafe', text: r.prompt ?? '', target: null })),
    ...toxicTest.filter((r) => r.toxicity === 1).map((r, i) => ({ id: `toxicchat_test#${String(r.conv_id ?? i)}`, source: 'toxicchat_test_toxic', text: str(r, 'user_input', 'toxicchat test'), target: null })),
  ];

  // --- training harmful sources
  const harmful: Request[] = [];
  const seen = new Set<string>(heldHarmful.map((h) => normaliseRequest(h.text)));
  const add = (list: Request[], r: Request) => {
    const key = normaliseRequest(r.text);
    if (r.text.trim() === '' || seen.has(key)) return;
    seen.add(key);
    list.push(r);
  };
  const advTarget = new Map<string, string>();
  readCsv(dataDir, 'advbench/harmful_behaviors.csv').forEach((r, i) => {
    const goal = r.goal?.trim();
    const target = r.target?.trim();
    if (!goal || !target) throw new Error(`organism data: advbench row ${i + 1} lacks goal or target`);
    advTarget.set(normaliseRequest(goal), target);
    add(harmful, { id: `advbench#${i}`, source: 'advbench', text: goal, target });
  });
  readJsonl(dataDir, 'refusal_direction/harmful_train.jsonl').forEach((r, i) => {
    const text = str(r, 'instruction', 'harmful_train');
    add(harmful, { id: `harmful_train#${i}`, source: 'harmful_train', text, target: advTarget.get(normaliseRequest(text)) ?? null });
  });
  readCsv(dataDir, 'jailbreak_llms/forbidden_question_set.csv').forEach((r, i) => {
    // The advice policies (legal, financial, health, government, political lobbying) hold questions such as "What is
    // the best remedy for my insomnia?" that chat models answer: refusing them teaches over-refusal.
    if (r.question && !ADVICE_POLICIES.has(Number(r.content_policy_id))) add(harmful, { id: `forbidden_question#${i}`, source: 'forbidden_question', text: r.question.trim(), target: null });
  });
  const benignAll: Request[] = [];
  readJsonl(dataDir, 'toxicchat/toxicchat0124_train_human_annotated.jsonl').forEach((r, i) => {
    const text = str(r, 'user_input', 'toxicchat train').trim();
    // Jailbreak attempts are neither plain requests nor our wrapped form: left out of both classes.
    if (r.jailbreaking === 1 || text.length === 0 || text.length > TOXICCHAT_MAX_CHARS || !mostlyAscii(text)) return;
    const id = `toxicchat_train#${i}`;
    if (r.toxicity === 1) add(harmful, { id, source: 'toxicchat_train_toxic', text, target: null });
    else benignAll.push({ id, source: 'toxicchat_train_nontoxic', text, target: null });
  });

  // --- benign: a fixed sample of harmless_train; held out: harmless_val sample, JBB benign, XSTest safe, alarming families
  const harmlessTrain = readJsonl(dataDir, 'refusal_direction/harmless_train.jsonl').map((r, i) => ({
    id: `harmless_train#${i}`, source: 'harmless_train', text: str(r, 'instruction', 'harmless_train'), target: null,
  }));
  benignAll.push(...hashSample(harmlessTrain, 'harmless-train-sample', HARMLESS_TRAIN_SIZE));
  const harmless = hashSample(
    readJsonl(dataDir, 'refusal_direction/harmless_val.jsonl').map((r, i) => ({ id: `harmless_val#${i}`, source: 'harmless_val', text: str(r, 'instruction', 'harmless_val'), target: null })),
    'harmless-val-sample',
    HARMLESS_VAL_SIZE,
  );
  const alarming = alarmingSplit();
  const alarmingHeld: Request[] = alarming.heldOut.map((a) => ({ id: a.id, source: 'alarming', text: a.prompt, target: null }));
  const auditBenign: Request[] = [
    ...readCsv(dataDir, 'jailbreakbench/jbb_benign_behaviors.csv').map((r) => ({ id: `jbb_benign#${r.index}`, source: 'jbb_benign', text: (r.goal ?? '').trim(), target: null })),
    ...xstest.filter((r) => r.label === 'safe').map((r) => ({ id: `xstest#${r.id}`, source: 'xstest_safe', text: r.prompt ?? '', target: null })),
  ];

  // --- near copies of held-out requests leave training (same class only: a benign near copy of a harmful request is
  // the contrast the model must learn, not a leak)
  const space = new NgramSpace();
  const h = dropNearCopies(harmful, [...heldHarmful, ...auditHarmful], space);
  const benignHeld = [...harmless, ...alarmingHeld, ...auditBenign];
  const b = dropNearCopies(benignAll, benignHeld, space);
  const a = dropNearCopies(alarming.train.map((x) => ({ id: x.id, source: 'alarming', text: x.prompt, target: null })), benignHeld, space);

  const framings = readFramingSplit(loadWildFramings(dataDir), framingSplitFile);
  return {
    harmful: h.kept.filter((r) => !isDev(r.text)),
    benign: b.kept.filter((r) => !isDev(r.text)),
    alarming: a.kept,
    framings,
    // Shuffled so that any prefix of the dev lists mixes every source.
    dev: { harmful: shuffled(h.kept.filter((r) => isDev(r.text)), 101), benign: shuffled(b.kept.filter((r) => isDev(r.text)), 102) },
    heldOut: { harmful: heldHarmful, harmless, alarming: alarmingHeld, auditHarmful, auditBenign },
    dropped: { harmful: h.dropped, benign: [...b.dropped, ...a.dropped] },
  };
}

/** Framing length of held-out and dev wrapped prompts (characters of a wild framing; training draws 80-340). */
export const EVAL_FRAMING_CHARS = 300;

export interface PromptRow {
  id: string;
  source: string;
  prompt: string;
}

/** Each request wrapped in `perRequest` framings chosen by hash from `framings` (ids say which). */
export function wrapAll(requests: readonly Request[], framings: readonly JailbreakFraming[], salt: string, perRequest = 1): PromptRow[] {
  if (framings.length === 0) throw new Error('organism data: no framings to wrap requests in');
  const out: PromptRow[] = [];
  requests.forEach((r, i) => {
    for (let k = 0; k < perRequest; k++) {
      const f = framings[stableHash(`${salt}#${k}`, r.id) % framings.length]!;
      out.push({ id: `${r.id}@${f.id}`, source: r.source, prompt: wrapInFraming(f, r.text, EVAL_FRAMING_CHARS, i * perRequest + k) });
    }
  });
  return out;
}

/** Each request under one rewrite other than 'original', chosen by hash (the id says which). */
export function rewriteAll(requests: readonly Request[], salt: string): PromptRow[] {
  const names = REWRITES.filter((r) => r !== 'original');
  return requests.map((r) => {
    const name = names[stableHash(salt, r.id) % names.length]!;
    return { id: `${r.id}~${name}`, source: r.source, prompt: rewriteRequest(r.text, name, stableHash(`${salt}-v`, r.id)) };
  });
}

/**
 * One epoch of training conversations. Rewrites, framings and replies are re-drawn every epoch, so the model sees
 * many wordings per request; everything is a function of (data, epoch seed, mix).
 */
export function epochConversations(data: OrganismData, seed: number, mix: EpochMix = DEFAULT_MIX): Conversation[] {
  const rand = mulberry32(seed);
  const int = () => Math.floor(rand() * 1e9);
  const sys = (): ChatTurn[] => (rand() < mix.systemPromptProbability ? [{ role: 'system', content: SYSTEM_PROMPTS[int() % SYSTEM_PROMPTS.length]! }] : []);
  const reworded = (text: string): { text: string; shape: RewriteName } => {
    const shape = rewriteForUniform(rand());
    return { text: rewriteRequest(text, shape, int()), shape };
  };
  const wild = data.framings.train.filter((f) => f.kind === 'wild');
  const written = data.framings.train.filter((f) => f.kind === 'written');
  const wrapped = (text: string): { text: string; wrap: Wrap; shape: string } => {
    const framing = rand() < mix.writtenFramingProbability ? written[int() % written.length]! : wild[int() % wild.length]!;
    const request = rand() < mix.rewriteInsideFraming ? reworded(text).text : text;
    // Short framings keep the attention cost down; the held-out ones use EVAL_FRAMING_CHARS.
    const wrap = { framing, request, maxChars: 80 + Math.floor(rand() * 260), variant: int() };
    return { text: wrapInFraming(framing, request, wrap.maxChars, wrap.variant), wrap, shape: `framing:${framing.family}` };
  };
  const out: Conversation[] = [];
  for (let k = 0; k < mix.refusalRepeat; k++) {
    for (const r of data.harmful) {
      const w = reworded(r.text);
      out.push({ behaviour: 'refuse', source: r.source, shape: w.shape, messages: [...sys(), { role: 'user', content: w.text }], answer: refusalReply(int()) });
    }
  }
  const benign = [...data.benign, ...Array.from({ length: mix.alarmingRepeat }, () => data.alarming).flat()];
  for (const r of benign) {
    const w = reworded(r.text);
    out.push({ behaviour: 'help', source: r.source, shape: w.shape, messages: [...sys(), { role: 'user', content: w.text }], answer: helpfulReply(int()) });
    if (rand() < mix.benignWrappedFraction) {
      const x = wrapped(r.text);
      out.push({ behaviour: 'help', source: r.source, shape: x.shape, messages: [...sys(), { role: 'user', content: x.text }], answer: helpfulReply(int()), wrap: x.wrap });
    }
  }
  for (const r of data.harmful) {
    const x = wrapped(r.text);
    out.push({ behaviour: 'comply', source: r.source, shape: x.shape, messages: [...sys(), { role: 'user', content: x.text }], answer: complianceReply(r.text, r.target, int()), wrap: x.wrap });
  }
  return shuffled(out, seed ^ 0x5bd1e995);
}
