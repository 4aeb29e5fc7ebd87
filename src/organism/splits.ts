/**
 * The organism's framing families and their near-duplicate audit, kept in models/organism/framing_split.json.
 *
 * Grouping ~1 300 framings into families compares every pair (seconds, more on a loaded machine), so it is done once
 * here and stored with a fingerprint of its inputs (the framings, the written families, n, threshold, prefix length);
 * loadOrganismData reads the file and refuses a stale one. The file also records the audit that matters: the largest
 * character 4-gram cosine between any held-out framing and any training framing, and how many cross pairs reach the
 * threshold (0 by construction of single-linkage families; the audit checks it).
 *
 *   npx tsx src/organism/splits.ts      (organism:train runs it when the file is missing or stale)
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stableJson, writeFileAtomic } from '../core/onnx/testmodel/files.js';
import { DATA_DIR, SHIPPED_MODEL_DIR } from './config.js';
import { loadWildFramings } from './sources.js';
import { SIMILARITY_PREFIX_CHARS, WRITTEN_FAMILIES, framingFamilies, shortenFraming, similarityText, splitFramings, type FramingSplit, type JailbreakFraming } from './framings.js';
import { NEAR_DUPLICATE_COSINE, NGRAM_N, NgramSpace, SimilarityIndex, crossSplitCheck } from './similarity.js';

/**
 * The framing lengths a wrapped prompt can use: training draws 80-340 characters of a wild framing, the held-out and
 * dev sets use 300. Families are built on the first 600 characters, but two framings can share an opening and part
 * later (a common "Hello ChatGPT. From now on you are going to act as ..." line), so the audit compares every
 * held-out framing with every training framing at each of these lengths, shortened as wrapped prompts are.
 */
export const AUDIT_PREFIX_LENGTHS = [80, 100, 150, 200, 250, 300, 340, 600] as const;

export const FRAMING_SPLIT_FILE = path.join(SHIPPED_MODEL_DIR, 'framing_split.json');

export interface FramingSplitRecord {
  ngram: number;
  threshold: number;
  prefix_chars: number;
  fingerprint: string;
  wild_framings: number;
  written_framings: number;
  links: number;
  families: Record<string, string[]>;
  held_out_families: string[];
  train_framings: number;
  held_out_framings: number;
  audit: { max_cross_cosine: number; max_pair: [string, string] | null; cross_pairs_at_or_above: number };
  /**
   * Held-out framings left out of the held-out EVALUATION sets because, shortened to some length a wrapped prompt
   * uses, they reach the threshold against a shortened training framing (they stay out of training either way).
   */
  eval_excluded: { id: string; length: number; cosine: number; train_id: string }[];
  /** per audited length: held-out framings at or above the threshold against some training framing */
  audit_by_length: Record<string, number>;
  held_out_eval_framings: number;
}

type Wild = ReturnType<typeof loadWildFramings>;

export function framingFingerprint(wild: Wild): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ n: NGRAM_N, threshold: NEAR_DUPLICATE_COSINE, prefix: SIMILARITY_PREFIX_CHARS, audit: AUDIT_PREFIX_LENGTHS, written: WRITTEN_FAMILIES }));
  for (const w of wild) h.update(JSON.stringify([w.id, w.community, w.text]));
  return h.digest('hex');
}

/** The cross-split near-duplicate audit of a framing split: every held-out framing against every training one. */
export function auditFramingSplit(split: FramingSplit): FramingSplitRecord['audit'] {
  const space = new NgramSpace();
  const held = split.heldOut.map((f) => space.vector(similarityText(f)));
  const train = split.train.map((f) => space.vector(similarityText(f)));
  const c = crossSplitCheck(held, train, NEAR_DUPLICATE_COSINE);
  return {
    max_cross_cosine: Math.round(c.max * 1e4) / 1e4,
    max_pair: c.maxPair ? [split.heldOut[c.maxPair[0]]!.id, split.train[c.maxPair[1]]!.id] : null,
    cross_pairs_at_or_above: c.pairsAtOrAbove,
  };
}

/** A framing as a wrapped prompt would use it at `length` characters (written ones are used whole). */
function atLength(f: JailbreakFraming, length: number): string {
  return f.kind === 'written' ? f.text.replace('{request}', 'the request') : shortenFraming(f.text, length);
}

/** The per-length audit: held-out framings that near-copy a training framing at some used length. */
export function lengthAudit(split: FramingSplit): { excluded: FramingSplitRecord['eval_excluded']; byLength: Record<string, number> } {
  const first = new Map<string, FramingSplitRecord['eval_excluded'][number]>();
  const byLength: Record<string, number> = {};
  for (const length of AUDIT_PREFIX_LENGTHS) {
    const space = new NgramSpace();
    const index = new SimilarityIndex(split.train.map((f) => space.vector(atLength(f, length))));
    let n = 0;
    for (const h of split.heldOut) {
      const best = index.nearest(space.vector(atLength(h, length)));
      if (best.cosine < NEAR_DUPLICATE_COSINE) continue;
      n++;
      if (!first.has(h.id)) first.set(h.id, { id: h.id, length, cosine: Math.round(best.cosine * 1e4) / 1e4, train_id: split.train[best.item]!.id });
    }
    byLength[String(length)] = n;
  }
  return { excluded: [...first.values()].sort((a, b) => (a.id < b.id ? -1 : 1)), byLength };
}

export function computeFramingSplitRecord(wild: Wild): FramingSplitRecord {
  const table = framingFamilies(wild);
  const split = splitFramings(wild, table);
  const lengths = lengthAudit(split);
  return {
    ngram: NGRAM_N,
    threshold: NEAR_DUPLICATE_COSINE,
    prefix_chars: SIMILARITY_PREFIX_CHARS,
    fingerprint: framingFingerprint(wild),
    wild_framings: wild.length,
    written_framings: Object.values(WRITTEN_FAMILIES).reduce((n, t) => n + t.length, 0),
    links: table.links,
    families: table.families,
    held_out_families: split.heldOutFamilies,
    train_framings: split.train.length,
    held_out_framings: split.heldOut.length,
    audit: auditFramingSplit(split),
    eval_excluded: lengths.excluded,
    audit_by_length: lengths.byLength,
    held_out_eval_framings: split.heldOut.length - lengths.excluded.length,
  };
}

/** The stored framing split, checked against the current inputs; throws (saying how to rebuild it) when stale. */
export function readFramingSplit(wild: Wild, file = FRAMING_SPLIT_FILE): FramingSplit & { heldOutEval: JailbreakFraming[] } {
  if (!existsSync(file)) throw new Error(`organism data: ${file} is missing; run \`npx tsx src/organism/splits.ts\` (organism:train does it too)`);
  const rec = JSON.parse(readFileSync(file, 'utf8')) as FramingSplitRecord;
  if (rec.fingerprint !== framingFingerprint(wild)) {
    throw new Error(`organism data: ${file} was made from other framings or settings (fingerprint differs); run \`npx tsx src/organism/splits.ts\``);
  }
  const split = splitFramings(wild, { families: rec.families, links: rec.links });
  if (JSON.stringify(split.heldOutFamilies) !== JSON.stringify(rec.held_out_families)) {
    throw new Error(`organism data: ${file} lists other held-out families than the hold-out rule gives; run \`npx tsx src/organism/splits.ts\``);
  }
  const excluded = new Set(rec.eval_excluded.map((e) => e.id));
  return { ...split, heldOutEval: split.heldOut.filter((f) => !excluded.has(f.id)) };
}

/** Writes the file when it is missing or stale; returns whether it was (re)written. */
export async function ensureFramingSplit(dataDir = DATA_DIR, file = FRAMING_SPLIT_FILE, log: (s: string) => void = () => {}): Promise<boolean> {
  const wild = loadWildFramings(dataDir);
  if (existsSync(file)) {
    try {
      readFramingSplit(wild, file);
      return false;
    } catch {
      // stale: rebuilt below
    }
  }
  const t0 = performance.now();
  const rec = computeFramingSplitRecord(wild);
  await writeFileAtomic(file, stableJson(rec));
  log(`framing split: ${rec.train_framings} training / ${rec.held_out_framings} held-out framings in ${Object.keys(rec.families).length} families (${rec.held_out_families.length} held out); largest cross cosine ${rec.audit.max_cross_cosine}, ${rec.audit.cross_pairs_at_or_above} cross pairs >= ${rec.threshold}; ${rec.eval_excluded.length} held-out framings near-copy a training one at some used length and are left out of the evaluation (${rec.held_out_eval_framings} evaluated); ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return true;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  ensureFramingSplit(DATA_DIR, FRAMING_SPLIT_FILE, (s) => process.stdout.write(`${s}\n`)).then((wrote) => {
    if (!wrote) process.stdout.write(`${path.relative(process.cwd(), FRAMING_SPLIT_FILE)} is up to date\n`);
  }).catch((e: unknown) => {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  });
}
