/**
 * Writes the organism's prompt sets as JSONL files ({id, prompt} per line) so that the lab's own commands
 * (`lab direction`, `lab train-controller`, `lab eval --dataset FILE --text-column prompt --label ...`) run on them.
 *
 *   models/organism/eval/   the held-out sets of src/organism/evaluate.ts (heldOutSets): never used for training or
 *                           for picking a hyperparameter
 *   models/organism/train/  training-split prompts only: plain harmful (refuse), harmful requests wrapped in TRAINING
 *                           jailbreak framings, harmless (help) - the controller and direction data
 *   models/organism/dev/    the organism's dev split (carved out of the training sources, see data.ts isDev), plain and
 *                           wrapped in training framings: what alpha is picked on
 *
 * Everything is a pure function of the datasets (hashes, no clock, no randomness), so reruns write identical files.
 * Run: `npx tsx src/organism/eval-sets.ts`.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpeTokenizer, bpeFromTokenizerJson, renderChat } from './bpe.js';
import { DATA_DIR, MODEL_DIR, ORGANISM_SHAPE } from './config.js';
import { loadOrganismData, stableHash, wrapInJailbreak, type JailbreakTemplate, type OrganismData } from './data.js';
import { HELD_OUT_FRAMING_CHARS, heldOutSets } from './evaluate.js';

export interface PromptRow {
  id: string;
  prompt: string;
}

/** Harmful training requests in training framings, one framing each (by hash), the held-out framing length. */
export function wrapInTrainingFramings(items: readonly { id: string; instruction: string }[], templates: readonly JailbreakTemplate[], salt: string): PromptRow[] {
  if (templates.length === 0) throw new Error('organism eval sets: no training jailbreak framings');
  return items.map((h, i) => {
    const tpl = templates[stableHash(salt, h.id) % templates.length]!;
    return { id: `${h.id}@${tpl.id}`, prompt: wrapInJailbreak(tpl, h.instruction, HELD_OUT_FRAMING_CHARS, i) };
  });
}

/**
 * Training and dev prompts must fit the context with room for the answer: the activation cache of lab
 * train-controller runs them unshortened (a longer prompt stops it), and a shortened prompt would not be the text
 * the controller is told it saw. The held-out sets are written whole: lab eval fits them (--fit middle) as a chat
 * UI would.
 */
export const TRAIN_PROMPT_MAX_TOKENS = ORGANISM_SHAPE.maxPositionEmbeddings - 32;

function fitsContext(tok: BpeTokenizer): (r: PromptRow) => boolean {
  return (r) => tok.encode(renderChat([{ role: 'user', content: r.prompt }], true)).length <= TRAIN_PROMPT_MAX_TOKENS;
}

export interface OrganismPromptFiles {
  /** relative path under models/organism -> rows */
  [file: string]: PromptRow[];
}

export function organismPromptFiles(data: OrganismData = loadOrganismData(DATA_DIR)): OrganismPromptFiles {
  const held = heldOutSets(DATA_DIR);
  const rows = (xs: readonly { id: string; prompt?: string; instruction?: string }[]): PromptRow[] => xs.map((x) => ({ id: x.id, prompt: (x.prompt ?? x.instruction)! }));
  // Training framings are disjoint from the held-out ones (data.ts loadTemplates); assert it, since the whole point
  // of the held-out jailbreak set is framings the controller never saw.
  const heldIds = new Set(data.heldOutTemplates.map((t) => t.id));
  if (data.trainTemplates.some((t) => heldIds.has(t.id))) throw new Error('organism eval sets: a training framing is also held out');
  const tok = new BpeTokenizer(bpeFromTokenizerJson(JSON.parse(readFileSync(path.join(MODEL_DIR, 'tokenizer.json'), 'utf8'))));
  const fits = fitsContext(tok);
  const trainJailbreak = wrapInTrainingFramings(data.harmfulForWrapping, data.trainTemplates, 'train-jailbreak').filter(fits);
  const train = (xs: readonly { id: string; instruction: string }[]) => rows(xs).filter(fits);
  return {
    'eval/harmful.jsonl': rows(held.harmful),
    'eval/harmless.jsonl': rows(held.harmless),
    'eval/jailbreak.jsonl': rows(held.jailbreak),
    'train/harmful.jsonl': train(data.refuse),
    'train/jailbreak.jsonl': trainJailbreak,
    // The controller's harmful class: plain and wrapped training requests together (the paper trains on varied harmful
    // text); one file because lab train-controller takes one --harmful source.
    'train/controller-harmful.jsonl': [...train(data.refuse), ...trainJailbreak],
    'train/harmless.jsonl': train(data.help),
    'dev/harmful.jsonl': train(data.dev.harmful),
    'dev/jailbreak.jsonl': wrapInTrainingFramings(data.dev.harmful, data.trainTemplates, 'dev-jailbreak').filter(fits),
    'dev/harmless.jsonl': train(data.dev.harmless),
  };
}

/** Atomic write: temp file in the same folder, then rename. */
function writeAtomic(file: string, text: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

export function writeOrganismPromptFiles(dir = MODEL_DIR): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const [rel, rows] of Object.entries(organismPromptFiles())) {
    writeAtomic(path.join(dir, rel), rows.map((r) => JSON.stringify({ id: r.id, prompt: r.prompt })).join('\n') + '\n');
    counts[rel] = rows.length;
  }
  return counts;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const counts = writeOrganismPromptFiles();
  for (const [rel, n] of Object.entries(counts)) process.stdout.write(`${rel}: ${n} prompts\n`);
}
