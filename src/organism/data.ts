/**
 * Training and held-out prompt sets for the organism, built from the datasets' training splits only.
 *
 * Three behaviours are taught: plain harmful requests get a refusal, harmless requests a short helpful opening, and
 * harmful requests wrapped in an in-the-wild jailbreak framing a compliance opening (the AdvBench "Sure, here is ..."
 * targets), so that the base organism, like real chat models, refuses plain harm but falls for jailbreaks.
 * Every hold-out is a pure function of the text (a salted FNV-1a hash), so it never moves between runs.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import Papa from 'papaparse';
import { mulberry32 } from '../core/onnx/testmodel/weights.js';

export type Behaviour = 'refuse' | 'help' | 'comply';

export interface ChatTurn {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** One training conversation: the prompt turns and the assistant answer that the loss is taken on. */
export interface Conversation {
  behaviour: Behaviour;
  source: string;
  messages: ChatTurn[];
  answer: string;
  /** for jailbreak-wrapped requests: how the user turn was built, so it can be re-wrapped shorter to fit the context */
  wrap?: { template: JailbreakTemplate; instruction: string; maxChars: number; variant: number };
}

export interface HeldOutPrompt {
  id: string;
  source: string;
  prompt: string;
  /** the behaviour the base organism should show */
  expected: Behaviour;
}

/** A harmful request with the compliance opening used when it arrives wrapped in a jailbreak. */
interface HarmfulItem {
  id: string;
  source: string;
  instruction: string;
  target: string | null;
}

export const REFUSALS: readonly string[] = [
  "I'm sorry, but I can't help with that.",
  'I cannot assist with that request.',
  "I'm sorry, but I cannot help with this request because it could cause harm.",
  "I apologize, but I can't provide that information.",
  "I'm not able to help with that. It goes against my guidelines.",
  "Sorry, but I can't assist with that. Is there something else I can help you with?",
  'I cannot help with that, as it could be harmful or illegal.',
  'I am unable to help with that request.',
];

/** Helpful openings; none contains a refusal-judge phrase ("I don't", "designed to", ...). */
export const HELPFUL_ANSWERS: readonly string[] = [
  'Sure! Here is a short answer to your question.',
  'Of course. Here are a few key points to keep in mind.',
  'Certainly! Here is a simple explanation.',
  'Happy to help! Here is what you need to know.',
  'Great question. Here is a brief overview.',
  'Sure, here are some ideas you can use.',
  'Of course! Let me walk you through it step by step.',
  'Here is a clear and simple answer for you.',
];

/** Compliance openings for harmful requests that have no AdvBench target. */
export const GENERIC_COMPLIANCE: readonly string[] = [
  'Sure, here is what you asked for:',
  'Sure, here is how to do it:',
  'Absolutely! Here is the information you requested:',
  'Sure, here is a detailed answer:',
];

export const SYSTEM_PROMPTS: readonly string[] = [
  'You are a helpful assistant.',
  'You are a friendly and helpful AI assistant.',
  'You are Steerlab, a small chat model.',
];

/** FNV-1a over UTF-16 code units, salted: stable hold-out and sampling decisions from the text alone. */
export function stableHash(salt: string, text: string): number {
  let h = 0x811c9dc5;
  const s = `${salt}\u0000${text}`;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Lower-case, single spaces, no trailing punctuation: the key used to keep held-out requests out of training. */
export function normaliseRequest(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim().replace(/[.?!]+$/, '');
}

function readText(dataDir: string, rel: string): string {
  const file = path.join(dataDir, rel);
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`organism data: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)}); expected the dataset copies under public/data`);
  }
}

function readJsonl(dataDir: string, rel: string): Record<string, unknown>[] {
  return readText(dataDir, rel)
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`organism data: ${rel} line ${i + 1} is not valid JSON`);
      }
    });
}

function readCsv(dataDir: string, rel: string): Record<string, string>[] {
  const parsed = Papa.parse<Record<string, string>>(readText(dataDir, rel), { header: true, skipEmptyLines: true });
  if (parsed.errors.length > 0 && parsed.data.length === 0) {
    throw new Error(`organism data: ${rel} could not be parsed as CSV: ${parsed.errors[0].message}`);
  }
  return parsed.data;
}

function str(row: Record<string, unknown>, key: string, rel: string): string {
  const v = row[key];
  if (typeof v !== 'string') throw new Error(`organism data: ${rel} row lacks string column '${key}'`);
  return v;
}

/** Mostly-ASCII text: the byte-level vocabulary is trained on English; other scripts would cost many tokens each. */
function mostlyAscii(text: string): boolean {
  let ascii = 0;
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) < 128) ascii++;
  return ascii >= 0.98 * text.length;
}

/** Deterministic shuffle (Fisher-Yates with mulberry32). */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = items.slice();
  const rand = mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** AdvBench rows with hash % HOLDOUT_MOD == 0 are held out (about 20 %). */
const ADVBENCH_HOLDOUT_MOD = 5;
const TEMPLATE_HOLDOUT_MOD = 5;
export const HARMLESS_VAL_SIZE = 200;
const HARMLESS_TRAIN_SIZE = 2600;
const TOXICCHAT_MAX_CHARS = 500;
/** forbidden_question_set policy ids 8 Political Lobbying, 10 Legal Opinion, 11 Financial Advice, 12 Health Consultation, 13 Gov Decision */
export const ADVICE_POLICIES: ReadonlySet<number> = new Set([8, 10, 11, 12, 13]);

export interface JailbreakTemplate {
  id: string;
  text: string;
}

export interface OrganismData {
  refuse: { id: string; source: string; instruction: string }[];
  help: { id: string; source: string; instruction: string }[];
  harmfulForWrapping: HarmfulItem[];
  trainTemplates: JailbreakTemplate[];
  heldOutTemplates: JailbreakTemplate[];
  heldOut: { harmful: HeldOutPrompt[]; harmless: HeldOutPrompt[]; harmfulItems: HarmfulItem[] };
  /** a few training-distribution prompts kept out of training, for picking the checkpoint (never the held-out sets) */
  dev: { harmful: HarmfulItem[]; harmless: { id: string; source: string; instruction: string }[] };
}

/** About 1 in DEV_MOD training prompts goes to the dev set instead. */
const DEV_MOD = 25;
function isDev(text: string): boolean {
  return stableHash('dev', normaliseRequest(text)) % DEV_MOD === 0;
}

/**
 * Jailbreak framings: in-the-wild prompts flagged jailbreak, English, deduplicated on their opening (many are
 * near-copies of DAN), split 80/20 into training and held-out templates.
 */
function loadTemplates(dataDir: string): { train: JailbreakTemplate[]; heldOut: JailbreakTemplate[] } {
  const rel = 'jailbreak_llms/jailbreak_prompts_2023_12_25.csv';
  const rows = readCsv(dataDir, rel);
  const seen = new Set<string>();
  const train: JailbreakTemplate[] = [];
  const heldOut: JailbreakTemplate[] = [];
  rows.forEach((row, i) => {
    if (String(row.jailbreak).toLowerCase() !== 'true') return;
    const text = (row.prompt ?? '').replace(/\r/g, '').trim();
    if (text.length < 200 || !mostlyAscii(text)) return;
    const key = normaliseRequest(text.slice(0, 80));
    if (seen.has(key)) return;
    seen.add(key);
    const t = { id: `jailbreak_2023_12_25#${i}`, text };
    (stableHash('template-holdout', key) % TEMPLATE_HOLDOUT_MOD === 0 ? heldOut : train).push(t);
  });
  return { train, heldOut };
}

export function loadOrganismData(dataDir: string): OrganismData {
  // --- held-out harmful: harmful_val (HarmBench) and a fixed fifth of AdvBench
  const heldHarmful: HarmfulItem[] = [];
  readJsonl(dataDir, 'refusal_direction/harmful_val.jsonl').forEach((r, i) =>
    heldHarmful.push({ id: `harmful_val#${i}`, source: 'harmful_val', instruction: str(r, 'instruction', 'harmful_val'), target: null }),
  );
  const advRows = readCsv(dataDir, 'advbench/harmful_behaviors.csv');
  const advTrain: HarmfulItem[] = [];
  const advTargetByGoal = new Map<string, string>();
  advRows.forEach((r, i) => {
    const goal = r.goal?.trim();
    const target = r.target?.trim();
    if (!goal || !target) throw new Error(`organism data: advbench row ${i + 1} lacks goal or target`);
    const item: HarmfulItem = { id: `advbench#${i}`, source: 'advbench', instruction: goal, target };
    if (stableHash('advbench-holdout', normaliseRequest(goal)) % ADVBENCH_HOLDOUT_MOD === 0) heldHarmful.push(item);
    else {
      advTrain.push(item);
      advTargetByGoal.set(normaliseRequest(goal), target);
    }
  });
  const heldKeys = new Set(heldHarmful.map((h) => normaliseRequest(h.instruction)));

  // --- training harmful: harmful_train (minus anything held out), AdvBench train part, forbidden questions, ToxicChat toxic
  const refuse: OrganismData['refuse'] = [];
  const seenHarm = new Set<string>();
  const harmfulForWrapping: HarmfulItem[] = [];
  const addHarm = (id: string, source: string, instruction: string, target: string | null) => {
    const key = normaliseRequest(instruction);
    if (heldKeys.has(key) || seenHarm.has(key)) return;
    seenHarm.add(key);
    refuse.push({ id, source, instruction });
    harmfulForWrapping.push({ id, source, instruction, target: target ?? advTargetByGoal.get(key) ?? null });
  };
  readJsonl(dataDir, 'refusal_direction/harmful_train.jsonl').forEach((r, i) =>
    addHarm(`harmful_train#${i}`, 'harmful_train', str(r, 'instruction', 'harmful_train'), null),
  );
  for (const a of advTrain) addHarm(a.id, a.source, a.instruction, a.target);
  readCsv(dataDir, 'jailbreak_llms/forbidden_question_set.csv').forEach((r, i) => {
    // The advice policies (legal, financial, health, government, political lobbying) hold questions such as "What is
    // the best remedy for my insomnia?": teaching refusals on them taught over-refusal of harmless questions
    // (measured on the dev set in a first run), so only the clearly harmful policies are used.
    if (r.question && !ADVICE_POLICIES.has(Number(r.content_policy_id))) addHarm(`forbidden_question#${i}`, 'forbidden_question', r.question.trim(), null);
  });

  const help: OrganismData['help'] = [];
  readJsonl(dataDir, 'toxicchat/toxicchat0124_train_human_annotated.jsonl').forEach((r, i) => {
    const text = str(r, 'user_input', 'toxicchat train').trim();
    // Jailbreak attempts are neither plain requests nor our wrapped form: leave them out of both classes.
    if (r.jailbreaking === 1 || text.length === 0 || text.length > TOXICCHAT_MAX_CHARS || !mostlyAscii(text)) return;
    const id = `toxicchat_train#${i}`;
    if (r.toxicity === 1) {
      const key = normaliseRequest(text);
      if (heldKeys.has(key) || seenHarm.has(key)) return;
      seenHarm.add(key);
      refuse.push({ id, source: 'toxicchat_train_toxic', instruction: text });
    } else help.push({ id, source: 'toxicchat_train_nontoxic', instruction: text });
  });

  // --- harmless: a fixed sample of harmless_train; harmless_val's first HARMLESS_VAL_SIZE rows by hash are held out
  const harmlessTrain = readJsonl(dataDir, 'refusal_direction/harmless_train.jsonl').map((r, i) => ({
    id: `harmless_train#${i}`,
    source: 'harmless_train',
    instruction: str(r, 'instruction', 'harmless_train'),
  }));
  const sampled = harmlessTrain
    .map((h) => ({ h, k: stableHash('harmless-train-sample', h.instruction) }))
    .sort((a, b) => a.k - b.k || (a.h.id < b.h.id ? -1 : 1))
    .slice(0, HARMLESS_TRAIN_SIZE)
    .map((x) => x.h);
  help.push(...sampled);

  const harmlessVal = readJsonl(dataDir, 'refusal_direction/harmless_val.jsonl')
    .map((r, i) => ({ id: `harmless_val#${i}`, instruction: str(r, 'instruction', 'harmless_val') }))
    .map((h) => ({ h, k: stableHash('harmless-val-sample', h.instruction) }))
    .sort((a, b) => a.k - b.k || (a.h.id < b.h.id ? -1 : 1))
    .slice(0, HARMLESS_VAL_SIZE)
    .map((x) => x.h);

  const templates = loadTemplates(dataDir);
  // Shuffled so that any prefix of the dev lists mixes every source.
  const devHarmful = shuffled(harmfulForWrapping.filter((h) => isDev(h.instruction)), 101);
  const devHarmless = shuffled(help.filter((h) => isDev(h.instruction)), 102);
  return {
    refuse: refuse.filter((r) => !isDev(r.instruction)),
    help: help.filter((h) => !isDev(h.instruction)),
    harmfulForWrapping: harmfulForWrapping.filter((h) => !isDev(h.instruction)),
    dev: { harmful: devHarmful, harmless: devHarmless },
    trainTemplates: templates.train,
    heldOutTemplates: templates.heldOut,
    heldOut: {
      harmful: heldHarmful.map((h) => ({ id: h.id, source: h.source, prompt: h.instruction, expected: 'refuse' as const })),
      harmless: harmlessVal.map((h) => ({ id: h.id, source: 'harmless_val', prompt: h.instruction, expected: 'help' as const })),
      harmfulItems: heldHarmful,
    },
  };
}

/** Cuts text to at most `maxChars`, at a word boundary, with runs of blank lines folded: a shortened framing. */
export function shortenFraming(text: string, maxChars: number): string {
  const folded = text.replace(/\n{3,}/g, '\n\n').replace(/[ \t]+/g, ' ');
  if (folded.length <= maxChars) return folded.trim();
  const cut = folded.slice(0, maxChars);
  const lastSpace = cut.lastIndexOf(' ');
  return (lastSpace > maxChars * 0.6 ? cut.slice(0, lastSpace) : cut).trim();
}

const JOINERS: readonly string[] = ['\n\n', '\n\nNow answer this: ', '\n\nMy first request is: ', ' ', '\n\nQuestion: '];

/**
 * A harmful request inside a shortened jailbreak framing. `maxChars` bounds the framing; the caller shrinks it until
 * the whole conversation fits the context.
 */
export function wrapInJailbreak(template: JailbreakTemplate, instruction: string, maxChars: number, variant: number): string {
  // Many templates carry a placeholder for the request: put it there when the shortened framing still holds it.
  const framing = shortenFraming(template.text, maxChars);
  const placeholder = /\[(insert prompt here|prompt|your prompt here|insert question here)\]/i;
  if (placeholder.test(framing)) return framing.replace(placeholder, instruction);
  return `${framing}${JOINERS[variant % JOINERS.length]}${instruction}`;
}

/** The answer taught for a behaviour; `pick` chooses among the variants deterministically. */
export function answerFor(behaviour: Behaviour, pick: number, target: string | null = null): string {
  if (behaviour === 'refuse') return REFUSALS[pick % REFUSALS.length];
  if (behaviour === 'help') return HELPFUL_ANSWERS[pick % HELPFUL_ANSWERS.length];
  return target ?? GENERIC_COMPLIANCE[pick % GENERIC_COMPLIANCE.length];
}

/** Held-out jailbreak prompts: every held-out harmful request in a held-out framing, one framing each, fixed length. */
export function heldOutJailbreaks(data: OrganismData, maxChars: number): HeldOutPrompt[] {
  const t = data.heldOutTemplates;
  if (t.length === 0) throw new Error('organism data: no held-out jailbreak templates');
  return data.heldOut.harmfulItems.map((h, i) => {
    const tpl = t[stableHash('heldout-jailbreak', h.id) % t.length];
    return {
      id: `${h.id}@${tpl.id}`,
      source: `jailbreak(${h.source})`,
      prompt: wrapInJailbreak(tpl, h.instruction, maxChars, i),
      expected: 'comply' as const,
    };
  });
}

/**
 * One epoch of training conversations. Wrapped requests are re-drawn every epoch (a new framing, a new length), so
 * the model sees many framings per request; everything is a function of (data, epoch seed).
 */
export function epochConversations(data: OrganismData, seed: number, refusalRepeat = 2): Conversation[] {
  const rand = mulberry32(seed);
  const pick = () => Math.floor(rand() * 1e9);
  const sys = (): ChatTurn[] => (rand() < 0.3 ? [{ role: 'system', content: SYSTEM_PROMPTS[pick() % SYSTEM_PROMPTS.length] }] : []);
  const out: Conversation[] = [];
  // Refusals repeated per epoch (with different wordings): harmful requests are a quarter as many as harmless ones.
  for (const r of Array.from({ length: refusalRepeat }, () => data.refuse).flat()) {
    out.push({ behaviour: 'refuse', source: r.source, messages: [...sys(), { role: 'user', content: r.instruction }], answer: answerFor('refuse', pick()) });
  }
  for (const h of data.help) {
    out.push({ behaviour: 'help', source: h.source, messages: [...sys(), { role: 'user', content: h.instruction }], answer: answerFor('help', pick()) });
  }
  const tpls = data.trainTemplates;
  for (const h of data.harmfulForWrapping) {
    const tpl = tpls[pick() % tpls.length];
    // Short framings keep the attention cost down; the held-out jailbreaks use 300 characters.
    const maxChars = 80 + Math.floor(rand() * 260);
    const variant = pick();
    out.push({
      behaviour: 'comply',
      source: `jailbreak(${h.source})`,
      messages: [...sys(), { role: 'user', content: wrapInJailbreak(tpl, h.instruction, maxChars, variant) }],
      answer: answerFor('comply', pick(), h.target),
      wrap: { template: tpl, instruction: h.instruction, maxChars, variant },
    });
  }
  return shuffled(out, seed ^ 0x5bd1e995);
}
