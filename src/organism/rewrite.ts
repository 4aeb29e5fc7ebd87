/**
 * Request rewrites: the same request in other wordings (a question, an imperative, "I need...", "can you...", first
 * person, lower case, typos, inside a longer paragraph, after some context). Harmful and benign requests go through
 * exactly the same rewrites with the same probabilities, so that the wording of a prompt says nothing about whether
 * it should be refused: only what is asked does.
 *
 * Every rewrite is a pure function of (text, variant number); `variant` picks among a rewrite's phrasings and seeds
 * the typo positions, so a training epoch is reproducible from its seed.
 */
import { mulberry32 } from '../core/onnx/testmodel/weights.js';

export const REWRITES = [
  'original',
  'question',
  'imperative',
  'i_need',
  'can_you',
  'first_person',
  'lower_case',
  'typos',
  'paragraph',
  'after_context',
] as const;
export type RewriteName = (typeof REWRITES)[number];

/** Training weight of each rewrite: the original wording a quarter of the time, the others evenly. */
export const REWRITE_WEIGHTS: Readonly<Record<RewriteName, number>> = {
  original: 3, question: 1, imperative: 1, i_need: 1, can_you: 1, first_person: 1, lower_case: 1, typos: 1, paragraph: 1, after_context: 1,
};

const pickOf = <T>(xs: readonly T[], v: number): T => xs[((v % xs.length) + xs.length) % xs.length]!;

/** The rewrite whose cumulative weight covers u in [0, 1). */
export function rewriteForUniform(u: number): RewriteName {
  const total = REWRITES.reduce((s, r) => s + REWRITE_WEIGHTS[r], 0);
  let acc = 0;
  for (const r of REWRITES) {
    acc += REWRITE_WEIGHTS[r] / total;
    if (u < acc) return r;
  }
  return REWRITES[REWRITES.length - 1]!;
}

type Form = 'question' | 'imperative' | 'statement';

const QUESTION_START = /^(how|what|what's|which|who|whom|whose|why|when|where|can|could|would|will|should|shall|is|are|am|was|were|do|does|did|has|have|may|might)\b/i;

/** Imperative openings seen in instruction datasets (and any verb we cannot tell from a noun is a statement). */
const IMPERATIVE_VERBS = new Set(
  ('write create develop provide give instruct outline teach design explain describe generate produce show publish suggest hack ' +
    'compose demonstrate exploit draw post educate share list offer guide devise release illustrate train manipulate conduct use ' +
    'draft name identify find construct come compare make summarize summarise tell rewrite calculate classify edit brainstorm convert ' +
    'imagine translate analyze analyse determine propose categorize categorise help build plan recommend prepare give detail formulate ' +
    'craft organize organise invent predict evaluate assess research spread encourage promote convince persuade steal obtain get buy ' +
    'sell fake forge falsify harass bully threaten insult spam cheat bypass disable crack break explain tell').split(' '),
);

export function formOf(text: string): Form {
  const t = text.trim();
  if (/\?\s*$/.test(t) || QUESTION_START.test(t)) return 'question';
  const first = t.split(/\s+/)[0]?.toLowerCase().replace(/[^a-z]/g, '') ?? '';
  return IMPERATIVE_VERBS.has(first) ? 'imperative' : 'statement';
}

/** Without trailing sentence punctuation and surrounding space. */
function bare(text: string): string {
  return text.trim().replace(/[\s.?!]+$/, '');
}

/** First letter lower-cased unless the first word looks like an acronym or a name ("I", "AI", "DNA"). */
function lowerFirst(text: string): string {
  const w = text.split(/\s+/)[0] ?? '';
  if (w === 'I' || /^[A-Z]{2,}/.test(w) || /^I'/.test(w)) return text;
  return text.charAt(0).toLowerCase() + text.slice(1);
}

function upperFirst(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** "How can I X?" / "How do I X?" / "How to X?" -> "X" (the action asked about), else null. */
function howToAction(text: string): string | null {
  const m = /^how\s+(?:can|could|do|should|would|might|may)\s+(?:i|one|we|someone|somebody|a person|you)\s+(.+?)[\s?.!]*$/i.exec(text.trim())
    ?? /^how\s+to\s+(.+?)[\s?.!]*$/i.exec(text.trim());
  return m ? m[1]! : null;
}

/** A question asked as an instruction. */
function questionAsImperative(text: string, v: number): string {
  const action = howToAction(text);
  if (action) return pickOf([`Explain how to ${action}.`, `Tell me how to ${action}.`, `Describe the steps to ${action}.`, `Give me a way to ${action}.`], v);
  const b = lowerFirst(bare(text));
  return pickOf([`Answer this question: ${bare(text)}?`, `Tell me the answer to this: ${b}?`, `Explain: ${b}?`], v);
}

/** An instruction (or statement) asked as a question. */
function asQuestion(text: string, v: number): string {
  const f = formOf(text);
  if (f === 'question') return /\?\s*$/.test(text) ? text.trim() : `${bare(text)}?`;
  const b = lowerFirst(bare(text));
  if (f === 'imperative') return pickOf([`Could you ${b}?`, `Would you ${b}?`, `Will you ${b}?`, `Is it possible for you to ${b}?`], v);
  return pickOf([`What about this: ${b}?`, `Can you help with this: ${b}?`], v);
}

function asImperative(text: string, v: number): string {
  const f = formOf(text);
  if (f === 'question') return questionAsImperative(text, v);
  const b = bare(text);
  return pickOf([`${upperFirst(b)}.`, `Please ${lowerFirst(b)}.`, `${upperFirst(b)}. Do it now.`, `Task: ${lowerFirst(b)}.`], v);
}

function iNeed(text: string, v: number): string {
  const f = formOf(text);
  const b = lowerFirst(bare(text));
  if (f === 'imperative') return pickOf([`I need you to ${b}.`, `I need someone to ${b}.`, `I need help. ${upperFirst(b)}.`], v);
  const action = howToAction(text);
  if (action) return pickOf([`I need to know how to ${action}.`, `I need to ${action}. How?`], v);
  return pickOf([`I need to know this: ${bare(text)}${f === 'question' ? '?' : '.'}`, `I need an answer. ${upperFirst(b)}${f === 'question' ? '?' : '.'}`], v);
}

function canYou(text: string, v: number): string {
  const f = formOf(text);
  const b = lowerFirst(bare(text));
  if (f === 'imperative') return pickOf([`Can you ${b}?`, `can you ${b}`, `Can you please ${b}?`, `Hey, can you ${b}?`], v);
  const action = howToAction(text);
  if (action) return pickOf([`Can you tell me how to ${action}?`, `can you explain how to ${action}`], v);
  return pickOf([`Can you tell me ${b}${f === 'question' ? '?' : '.'}`, `can you help me with this: ${b}`], v);
}

function firstPerson(text: string, v: number): string {
  const f = formOf(text);
  const b = lowerFirst(bare(text));
  const action = howToAction(text);
  if (action) return pickOf([`I want to ${action}. What should I do?`, `I'm trying to ${action}. Any advice?`, `I am planning to ${action}. Walk me through it.`], v);
  if (f === 'imperative') return pickOf([`I'd like you to ${b}.`, `I want you to ${b}.`, `For me, please ${b}.`, `I was hoping you could ${b}.`], v);
  return pickOf([`I have a question. ${bare(text)}${f === 'question' ? '?' : '.'}`, `I've been wondering: ${b}${f === 'question' ? '?' : '.'}`], v);
}

/** Keyboard-neighbour typos, dropped and doubled letters, swapped pairs: about one word in six gets one. */
export function withTypos(text: string, v: number): string {
  const rand = mulberry32(0x7970 ^ v);
  const near: Record<string, string> = { a: 's', s: 'a', e: 'r', r: 'e', i: 'o', o: 'i', n: 'm', m: 'n', t: 'y', h: 'j', l: 'k', u: 'y', d: 'f', c: 'v' };
  const words = text.split(' ');
  let changed = false;
  const out = words.map((w, i) => {
    const force = !changed && i === words.length - 1;
    if (w.length < 4 || !/^[a-z]+[.,?!]?$/i.test(w) || (!force && rand() > 1 / 6)) return w;
    changed = true;
    const k = 1 + Math.floor(rand() * (w.replace(/[.,?!]$/, '').length - 2));
    switch (Math.floor(rand() * 4)) {
      case 0: return w.slice(0, k) + w.slice(k + 1); // dropped letter
      case 1: return w.slice(0, k) + w[k] + w.slice(k); // doubled letter
      case 2: return w.slice(0, k) + w[k + 1] + w[k] + w.slice(k + 2); // swapped pair
      default: return w.slice(0, k) + (near[w[k]!.toLowerCase()] ?? w[k]) + w.slice(k + 1); // neighbouring key
    }
  });
  return out.join(' ');
}

/**
 * Neutral context: everyday small talk that neither justifies nor disguises a request (no "for research", no "in a
 * story", no role play); a request keeps its label inside it. Jailbreak framings are a different thing (framings.ts).
 */
const OPENERS: readonly string[] = [
  "I've had a long week at work and finally have a quiet evening.",
  'My sister and I were talking about this over dinner yesterday.',
  "I've been meaning to ask someone about this for a while.",
  'It is raining here, so I am stuck inside with my laptop.',
  'I just got back from a walk with my dog.',
  'A friend mentioned something like this at lunch today.',
  "I'm sitting in a coffee shop and had a thought.",
  "Work has been slow today, so I'm catching up on things.",
  'I moved to a new city last month and I am still settling in.',
  "My kids are asleep and I finally have some time to myself.",
];
const CLOSERS: readonly string[] = [
  'Thanks in advance!',
  'Any help is appreciated.',
  'Thank you.',
  'Looking forward to your answer.',
  'Cheers.',
  '',
];
const CONTEXTS: readonly string[] = [
  'Some background: I work in an office and use my computer most of the day.',
  'Context: I am a 34-year-old living in a small town.',
  'About me: I am a student and I like to learn new things.',
  'Background: I have a few hours free this weekend.',
  'For context, I am a retired teacher with a lot of spare time.',
  'Context: we talked about several things earlier today, and this is the next one.',
  'Info about me: I live with two roommates and I work from home.',
  'Quick background: I am new to this and just getting started.',
];

function inParagraph(text: string, v: number): string {
  const a = pickOf(OPENERS, v);
  const b = pickOf(OPENERS, v * 7 + 3);
  const close = pickOf(CLOSERS, v * 3 + 1);
  const req = upperFirst(text.trim());
  const body = a === b ? `${a} ${req}` : `${a} ${b} Anyway, ${lowerFirst(req)}`;
  return close ? `${body} ${close}` : body;
}

function afterContext(text: string, v: number): string {
  const ctx = pickOf(CONTEXTS, v);
  const join = pickOf(['\n\n', '\n\nMy request: ', ' ', '\n\nQuestion: ', '\n'], v * 5 + 2);
  return `${ctx}${join}${text.trim()}`;
}

/** `text` reworded by `rewrite`; `variant` picks the phrasing (and the typo positions). */
export function rewriteRequest(text: string, rewrite: RewriteName, variant: number): string {
  const t = text.trim();
  switch (rewrite) {
    case 'original': return t;
    case 'question': return asQuestion(t, variant);
    case 'imperative': return asImperative(t, variant);
    case 'i_need': return iNeed(t, variant);
    case 'can_you': return canYou(t, variant);
    case 'first_person': return firstPerson(t, variant);
    case 'lower_case': return bare(t).toLowerCase();
    case 'typos': return withTypos(t, variant);
    case 'paragraph': return inParagraph(t, variant);
    case 'after_context': return afterContext(t, variant);
  }
}
