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
import { SIMILARITY_PREFIX_CHARS, WRITTEN_FAMILIES, framingFamilies, similarityText, splitFramings, type FramingSplit } from './framings.js';
import { NEAR_DUPLICATE_COSINE, NGRAM_N, NgramSpace, crossSplitCheck } from './similarity.js';

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
}

type Wild = ReturnType<typeof loadWildFramings>;

export function framingFingerprint(wild: Wild): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ n: NGRAM_N, threshold: NEAR_DUPLICATE_COSINE, prefix: SIMILARITY_PREFIX_CHARS, written: WRITTEN_FAMILIES }));
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

export function computeFramingSplitRecord(wild: Wild): FramingSplitRecord {
  const table = framingFamilies(wild);
  const split = splitFramings(wild, table);
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
  };
}

/** The stored framing split, checked against the current inputs; throws (saying how to rebuild it) when stale. */
export function readFramingSplit(wild: Wild, file = FRAMING_SPLIT_FILE): FramingSplit {
  if (!existsSync(file)) throw new Error(`organism data: ${file} is missing; run \`npx tsx src/organism/splits.ts\` (organism:train does it too)`);
  const rec = JSON.parse(readFileSync(file, 'utf8')) as FramingSplitRecord;
  if (rec.fingerprint !== framingFingerprint(wild)) {
    throw new Error(`organism data: ${file} was made from other framings or settings (fingerprint differs); run \`npx tsx src/organism/splits.ts\``);
  }
  const split = splitFramings(wild, { families: rec.families, links: rec.links });
  if (JSON.stringify(split.heldOutFamilies) !== JSON.stringify(rec.held_out_families)) {
    throw new Error(`organism data: ${file} lists other held-out families than the hold-out rule gives; run \`npx tsx src/organism/splits.ts\``);
  }
  return split;
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
  log(`framing split: ${rec.train_framings} training / ${rec.held_out_framings} held-out framings in ${Object.keys(rec.families).length} families (${rec.held_out_families.length} held out); largest cross cosine ${rec.audit.max_cross_cosine}, ${rec.audit.cross_pairs_at_or_above} cross pairs >= ${rec.threshold}; ${((performance.now() - t0) / 1000).toFixed(1)} s`);
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
