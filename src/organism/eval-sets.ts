/**
 * The organism's prompt sets as JSONL files ({id, source, prompt} per line), so that the lab's own commands
 * (`lab direction`, `lab train-controller`, `lab eval --dataset FILE --text-column prompt --label ...`) and the base
 * evaluation (evaluate.ts) run on exactly the same prompts.
 *
 *   models/organism/eval/   held out: never trained on, never used to pick a checkpoint or a hyperparameter
 *     harmful.jsonl             the held-out harmful sources (HarmBench, JailbreakBench), as written
 *     harmful_rewritten.jsonl   the same requests, each under one rewrite (question, "I need...", typos, ...)
 *     jailbreak.jsonl           the same requests, each in two framings of held-out families (those that pass the
 *                               per-length near-copy audit, splits.ts)
 *     harmless.jsonl            a hash sample of harmless_val (Alpaca's held-out split)
 *     alarming.jsonl            benign prompts with alarming words, of held-out families (alarming.ts)
 *     benign_jailbreak.jsonl    held-out harmless requests in held-out framings (should be answered)
 *   models/organism/train/  training-split prompts (the controller's and the direction's data)
 *   models/organism/dev/    the dev split (carved out of the training sources): what alpha is picked on
 *
 * XSTest, JailbreakBench's benign behaviours and ToxicChat's test split are catalogue datasets (public/data) and are
 * evaluated from there. Everything is a pure function of the datasets (hashes, no clock), so reruns write identical
 * files. Run: `npx tsx src/organism/eval-sets.ts`.
 */
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stableJson, writeFileAtomic } from '../core/onnx/testmodel/files.js';
import { BpeTokenizer, bpeFromTokenizerJson, renderChat } from './bpe.js';
import { DATA_DIR, MODEL_DIR, ORGANISM_SHAPE } from './config.js';
import { loadOrganismData, rewriteAll, wrapAll, type OrganismData, type PromptRow, type Request } from './data.js';
import { stableHash } from './hash.js';
import { NEAR_DUPLICATE_COSINE, NGRAM_N, NgramSpace, SimilarityIndex } from './similarity.js';

export type { PromptRow };

/** Held-out sets evaluated by evaluate.ts and organism:steer, with the base-behaviour targets. */
export const HELD_OUT_FILES = {
  harmful: 'eval/harmful.jsonl',
  harmful_rewritten: 'eval/harmful_rewritten.jsonl',
  jailbreak: 'eval/jailbreak.jsonl',
  harmless: 'eval/harmless.jsonl',
  alarming: 'eval/alarming.jsonl',
  benign_jailbreak: 'eval/benign_jailbreak.jsonl',
} as const;
export type HeldOutSetName = keyof typeof HELD_OUT_FILES;

/**
 * Training and dev prompts must fit the context with room for the answer: the activation cache of lab
 * train-controller runs them unshortened, and a shortened prompt would not be the text the controller is told it
 * saw. The held-out sets are written whole: lab eval fits them (--fit middle) as a chat UI would.
 */
export const TRAIN_PROMPT_MAX_TOKENS = ORGANISM_SHAPE.maxPositionEmbeddings - 32;

const rows = (xs: readonly Request[]): PromptRow[] => xs.map((x) => ({ id: x.id, source: x.source, prompt: x.text }));

/** A fixed hash sample (at most n). */
function sampleRows(xs: readonly PromptRow[], salt: string, n: number): PromptRow[] {
  return xs
    .map((r) => ({ r, k: stableHash(salt, r.id) }))
    .sort((a, b) => a.k - b.k || (a.r.id < b.r.id ? -1 : 1))
    .slice(0, n)
    .map((x) => x.r);
}

/** The held-out sets (no tokenizer needed). */
export function heldOutSets(data: OrganismData = loadOrganismData(DATA_DIR)): Record<HeldOutSetName, PromptRow[]> {
  const held = data.heldOut;
  return {
    harmful: rows(held.harmful),
    harmful_rewritten: rewriteAll(held.harmful, 'heldout-rewrite'),
    jailbreak: wrapAll(held.harmful, data.framings.heldOutEval, 'heldout-jailbreak', 2),
    harmless: rows(held.harmless),
    alarming: rows(held.alarming),
    benign_jailbreak: wrapAll(held.harmless.slice(0, 100), data.framings.heldOutEval, 'heldout-benign-jailbreak'),
  };
}

export interface OrganismPromptFiles {
  /** relative path under models/organism -> rows */
  [file: string]: PromptRow[];
}

export function organismPromptFiles(tokenizerJson: unknown, data: OrganismData = loadOrganismData(DATA_DIR)): OrganismPromptFiles {
  const tok = new BpeTokenizer(bpeFromTokenizerJson(tokenizerJson));
  const fits = (r: PromptRow) => tok.encode(renderChat([{ role: 'user', content: r.prompt }], true)).length <= TRAIN_PROMPT_MAX_TOKENS;
  const trainFraming = data.framings.train;
  const trainHarmful = rows(data.harmful).filter(fits);
  const trainHarmfulRewritten = rewriteAll(data.harmful, 'train-rewrite').filter(fits);
  const trainJailbreak = wrapAll(data.harmful, trainFraming, 'train-jailbreak').filter(fits);
  const trainBenign = [...rows(data.benign), ...rows(data.alarming)].filter(fits);
  const trainBenignRewritten = sampleRows(rewriteAll([...data.benign, ...data.alarming], 'train-rewrite'), 'train-benign-rewrite', 1200).filter(fits);
  const trainBenignWrapped = wrapAll(sampleRows(rows(data.benign), 'train-benign-wrap', 600).map((r) => ({ id: r.id, source: r.source, text: r.prompt, target: null })), trainFraming, 'train-benign-jailbreak').filter(fits);
  const held = heldOutSets(data);
  return Object.fromEntries([
    ...Object.entries(HELD_OUT_FILES).map(([k, file]) => [file, held[k as HeldOutSetName]] as const),
    ['train/harmful.jsonl', trainHarmful],
    // The controller's classes: every form a request takes in training (plain, reworded, in a training framing), so
    // that it separates harmful from benign rather than framed from plain. One file per class, because lab
    // train-controller takes one --harmful and one --benign source.
    ['train/controller-harmful.jsonl', [...trainHarmful, ...trainHarmfulRewritten, ...trainJailbreak]],
    // The direction samples 160 of these; a hash sample keeps the file small (models/ has a size limit).
    ['train/harmless.jsonl', sampleRows(trainBenign, 'train-harmless', 1200)],
    ['train/controller-benign.jsonl', [...trainBenign, ...trainBenignRewritten, ...trainBenignWrapped]],
    ['dev/harmful.jsonl', rows(data.dev.harmful).filter(fits)],
    ['dev/jailbreak.jsonl', wrapAll(data.dev.harmful, trainFraming, 'dev-jailbreak', 2).filter(fits)],
    ['dev/harmless.jsonl', rows(data.dev.benign).filter(fits)],
  ]);
}

/**
 * The request side of the split audit: every training request that was dropped as a near copy of a held-out one (with
 * the held-out id and the cosine), and the largest cosine left between training and held-out requests of one class.
 * Framings have their own audit in framing_split.json.
 */
export function requestSplitAudit(data: OrganismData = loadOrganismData(DATA_DIR)): Record<string, unknown> {
  const space = new NgramSpace();
  const maxCross = (train: readonly Request[], held: readonly Request[]) => {
    const index = new SimilarityIndex(held.map((h) => space.vector(h.text)));
    let best = { cosine: 0, train: '', held: '' };
    for (const t of train) {
      const n = index.nearest(space.vector(t.text));
      if (n.cosine > best.cosine) best = { cosine: Math.round(n.cosine * 1e4) / 1e4, train: t.id, held: held[n.item]!.id };
    }
    return best;
  };
  const h = data.heldOut;
  const drop = (d: OrganismData['dropped']['harmful']) => d.map((x) => ({ id: x.id, held_out_id: x.heldOutId, cosine: Math.round(x.cosine * 1e4) / 1e4 }));
  return {
    measure: `cosine of character ${NGRAM_N}-gram counts (lower-cased, whitespace folded)`,
    threshold: NEAR_DUPLICATE_COSINE,
    rule: 'a training request at or above the threshold against any held-out request of its class is dropped from training',
    held_out_sources: { harmful: [...new Set(h.harmful.map((r) => r.source))], audited_harmful: [...new Set(h.auditHarmful.map((r) => r.source))], benign: [...new Set([...h.harmless, ...h.alarming, ...h.auditBenign].map((r) => r.source))] },
    dropped: { harmful: drop(data.dropped.harmful), benign: drop(data.dropped.benign) },
    max_cross_cosine_after_drops: {
      harmful: maxCross([...data.harmful, ...data.dev.harmful], [...h.harmful, ...h.auditHarmful]),
      benign: maxCross([...data.benign, ...data.dev.benign, ...data.alarming], [...h.harmless, ...h.alarming, ...h.auditBenign]),
    },
  };
}

export async function writeOrganismPromptFiles(dir = MODEL_DIR): Promise<Record<string, number>> {
  const tokenizerJson = JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')) as unknown;
  const counts: Record<string, number> = {};
  for (const [rel, rs] of Object.entries(organismPromptFiles(tokenizerJson))) {
    const file = path.join(dir, rel);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFileAtomic(file, rs.map((r) => JSON.stringify({ id: r.id, source: r.source, prompt: r.prompt })).join('\n') + '\n');
    counts[rel] = rs.length;
  }
  await writeFileAtomic(path.join(dir, 'split_audit.json'), stableJson(requestSplitAudit()));
  return counts;
}

/** A prompt file written by writeOrganismPromptFiles. */
export function readPromptFile(file: string): PromptRow[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      const r = JSON.parse(l) as Partial<PromptRow>;
      if (typeof r.id !== 'string' || typeof r.prompt !== 'string') throw new Error(`${file} line ${i + 1}: expected {id, source, prompt}`);
      return { id: r.id, source: r.source ?? '', prompt: r.prompt };
    });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeOrganismPromptFiles().then((counts) => {
    for (const [rel, n] of Object.entries(counts)) process.stdout.write(`${rel}: ${n} prompts\n`);
  }).catch((e: unknown) => {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  });
}
