/**
 * The numbers of the organism's model card, generated from the result files so that the card never drifts from them.
 * MODEL_CARD.md is written by hand; each block between `<!-- card:NAME -->` and `<!-- /card:NAME -->` is replaced by
 * the table of that name, built from the files next to it (training_log.json, eval_results.json,
 * steering_results.json, split_audit.json, framing_split.json, noise_ablation.json).
 *
 *   npx tsx src/organism/card.ts                                  fills the blocks of MODEL_DIR/MODEL_CARD.md
 *   npx tsx src/organism/card.ts --ablation LABEL=DIR ...         writes MODEL_DIR/noise_ablation.json from the
 *                                                                 steering and eval results of several model folders
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../core/util/atomic-write.js';
import { stableJson } from '../core/onnx/testmodel/files.js';
import { MODEL_DIR, PROJECT_ROOT } from './config.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const readJson = (dir: string, file: string): Json | null => {
  const p = path.join(dir, file);
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as Json) : null;
};
const pct = (x: number) => (100 * x).toFixed(1);
const frac = (k: number, n: number) => `${pct(k / Math.max(1, n))} % (${k}/${n})`;
const minutes = (s: number) => `${(s / 60).toFixed(1)} min`;

/** One table row per line. */
const table = (head: string[], rows: (string | number)[][]): string[] => [
  `| ${head.join(' | ')} |`,
  `|${head.map(() => '---|').join('')}`,
  ...rows.map((r) => `| ${r.join(' | ')} |`),
];

export function trainingBlock(log: Json): string[] {
  const loads = [...(log.load as number[])].sort((a, b) => a - b);
  const med = loads[Math.floor(loads.length / 2)] ?? 0;
  const last = log.steps[log.steps.length - 1];
  return [
    `Steps run: ${log.stoppedAt} of ${log.config.steps} (stopped by ${log.stoppedBy}); final logged loss ${last ? last.loss.toFixed(4) : '-'}.`,
    `Time: ${log.totalSeconds.toFixed(0)} s wall (${minutes(log.totalSeconds)}), ${log.totalCpuSeconds.toFixed(0)} s CPU of the training process (${minutes(log.totalCpuSeconds)}),`,
    `on the shared 2-core machine (1-minute load average at the log lines: min ${loads[0] ?? '-'}, median ${med}, max ${loads[loads.length - 1] ?? '-'}).`,
    `Shipped checkpoint: step ${log.best?.step} (best dev score). Dev checks (dev split, greedy, 10 tokens, keyword judge):`,
    '',
    ...table(['step', 'harmful refused', 'harmless refused', 'jailbreak (training framings) refused', 'score'],
      (log.dev as Json[]).map((d) => [d.step, pct(d.harmfulRefusal), pct(d.harmlessRefusal), pct(d.jailbreakRefusal), d.score.toFixed(3)])),
  ];
}

export function dataBlock(log: Json): string[] {
  const d = log.data;
  const list = (o: Record<string, number>) => Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ');
  const shapes = d.epoch0.by_shape as Record<string, Record<string, number>>;
  return [
    `Training requests after the split: harmful ${list(d.harmful_by_source)}; benign ${list(d.benign_by_source)}; alarming-word benign prompts written here ${d.alarming}.`,
    `Dev split (checkpoint and alpha choice): ${d.dev.harmful} harmful, ${d.dev.benign} benign. Near copies of held-out requests dropped from training: harmful ${d.near_copies_dropped.harmful}, benign ${d.near_copies_dropped.benign}.`,
    `Framings: ${d.framings.train} training, ${d.framings.held_out} held out, in ${d.framings.families} families (${d.framings.held_out_families} held out).`,
    `One epoch (the first): ${d.epoch0.conversations} conversations, ${list(d.epoch0.by_behaviour)}. By request shape:`,
    '',
    ...table(['behaviour', 'shapes (count)'], Object.entries(shapes).map(([b, row]) => [b, Object.entries(row).sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k} ${v}`).join(', ')])),
  ];
}

export function splitBlock(audit: Json, framing: Json): string[] {
  const drops = (xs: Json[]) => {
    const by: Record<string, number> = {};
    for (const x of xs) by[String(x.id).split('#')[0]!] = (by[String(x.id).split('#')[0]!] ?? 0) + 1;
    return `${xs.length} (${Object.entries(by).map(([k, v]) => `${k} ${v}`).join(', ')})`;
  };
  const mx = audit.max_cross_cosine_after_drops;
  return [
    `Measure: ${audit.measure}; threshold ${audit.threshold} (at or above = near copy), for requests and framings alike.`,
    `- Requests: ${audit.rule}. Dropped: harmful ${drops(audit.dropped.harmful)}; benign ${drops(audit.dropped.benign)}.`,
    `  Largest cosine left between a training or dev request and a held-out one: harmful ${mx.harmful.cosine} (${mx.harmful.train} vs ${mx.harmful.held}), benign ${mx.benign.cosine} (${mx.benign.train} vs ${mx.benign.held}).`,
    `- Framings: ${framing.wild_framings} in-the-wild + ${framing.written_framings} written, grouped into ${Object.keys(framing.families).length} families by single linkage at the threshold on the first ${framing.prefix_chars} characters (${framing.links} links);`,
    `  ${framing.held_out_families.length} families held out (${framing.held_out_framings} framings), ${framing.train_framings} training framings. Largest cross cosine ${framing.audit.max_cross_cosine}; cross pairs at or above the threshold: ${framing.audit.cross_pairs_at_or_above}.`,
    `  Per-length audit (held-out vs training framings both shortened to each length a wrapped prompt uses; held-out framings at or above the threshold): ${Object.entries(framing.audit_by_length).map(([k, v]) => `${k} chars ${v}`).join(', ')}.`,
    `  The ${framing.eval_excluded.length} framings flagged at any length stay out of training and out of the evaluation sets; ${framing.held_out_eval_framings} held-out framings are evaluated.`,
    `Every id: held-out prompts in eval_results.json (held_out_ids), drops in split_audit.json, families and exclusions in framing_split.json.`,
  ];
}

export function baseBlock(ev: Json): string[] {
  const fp = ev.fp32.sets as Json[];
  const q = ev.q4f16.sets as Json[];
  const diff = ev.q4f16_vs_fp32_verdict_differences as Record<string, string[] | number>;
  const nd = (k: string) => (Array.isArray(diff[k]) ? (diff[k] as string[]).length : Number(diff[k] ?? 0));
  const rows = fp.map((s) => {
    const o = q.find((x) => x.name === s.name)!;
    return [s.name, s.n, pct(s.rate), pct(s.strict_rate), pct(o.rate), pct(o.strict_rate), nd(s.name)];
  });
  const targets = (dtype: string) => (ev[dtype].targets as Json[]).map((t) => `${t.what}: ${frac(t.refused, t.n)} (strict ${pct(t.strict_rate)} %), target ${t.bound}: **${t.met ? 'met' : 'missed'}**`);
  const harmful = fp.find((s) => s.name === 'harmful');
  return [
    ...table(['set', 'n', 'fp32 keyword %', 'fp32 strict %', 'q4f16 keyword %', 'q4f16 strict %', 'verdicts differing'], rows),
    '',
    ...(harmful?.by_source ? [`Plain harmful by held-out source (fp32): ${Object.entries(harmful.by_source as Record<string, Json>).map(([k, c]) => `${k} ${frac(c.refused, c.n)}`).join('; ')}.`, ''] : []),
    'Targets, fp32:',
    ...targets('fp32').map((t) => `- ${t}`),
    '',
    'Targets, q4f16:',
    ...targets('q4f16').map((t) => `- ${t}`),
    '',
    `Time: fp32 ${ev.fp32.seconds} s, q4f16 ${ev.q4f16.seconds} s (shared machine).`,
  ];
}

const cellRow = (cs: Json[], set: string, conds: string[]) => {
  const c = (cond: string) => cs.find((x) => x.set === set && x.condition === cond);
  const base = c('base');
  return [set, base?.n ?? '-', ...conds.map((k) => (c(k) ? `${pct(c(k)!.rate)} / ${pct(c(k)!.strict_rate)}` : '-'))];
};

export function steeringBlock(st: Json): string[] {
  const cells = st.results as Json[];
  const sets = [...new Set(cells.map((c) => c.set as string))];
  const q4 = (st.results_q4f16 ?? []) as Json[];
  const t = st.targets;
  const sel = st.direction.selected;
  return [
    `Direction ${st.direction.id}: residual index ${sel?.residual_index}, position ${sel?.position}, |r| ${sel?.norm?.toFixed(2)}${sel?.scores ? `, ablation refusal score ${sel.scores.ablationRefusalScore.toFixed(2)}, steering refusal score ${sel.scores.steeringRefusalScore.toFixed(2)}, KL ${sel.scores.kl.toFixed(3)}` : ''}.`,
    `Controller: held-out (training-split) accuracy ${st.controller.held_out_accuracy?.toFixed(3)} on ${st.controller.rows?.validation} rows.`,
    `Alpha ${st.alpha.picked}, picked on the dev split: ${st.alpha.rule}. Dev sweep (WAS; keyword % / strict % on dev jailbreak; keyword % on dev harmless and dev harmful; base ${pct(st.alpha.dev_base.jailbreak)} / ${pct(st.alpha.dev_base.jailbreak_strict)}, ${pct(st.alpha.dev_base.harmless)}, ${pct(st.alpha.dev_base.harmful)}):`,
    '',
    ...table(['alpha', 'dev jailbreak', 'dev harmless', 'dev harmful'],
      (st.alpha.dev_trials as Json[]).map((x) => [x.alpha === st.alpha.picked ? `**${x.alpha}**` : x.alpha, `${pct(x.jailbreak)} / ${pct(x.jailbreak_strict)}`, pct(x.harmless), pct(x.harmful)])),
    '',
    'Held-out sets (refusal %, keyword / strict):',
    '',
    ...table(['set', 'n', 'base', 'uniform', 'WAS'], sets.map((s) => cellRow(cells, s, ['base', 'uniform', 'was']))),
    '',
    ...(q4.length > 0 ? ['Fused q4f16 graph (`--dtype q4f16`):', '', ...table(['set', 'n', 'base', 'WAS'], [...new Set(q4.map((c) => c.set as string))].map((s) => cellRow(q4, s, ['base', 'was']))), ''] : []),
    `Targets: held-out jailbreak WAS strict refusal ${pct(t.jailbreak_was_strict)} % (>= 60 %: **${t.jailbreak_was_strict_met ? 'met' : 'missed'}**); harmless strict over-refusal rise ${t.harmless_strict_rise_points.toFixed(1)} points, keyword ${t.harmless_keyword_rise_points.toFixed(1)} (<= 3: **${t.harmless_rise_met ? 'met' : 'missed'}**).`,
    '',
    `Time per step (s, shared 2-core machine): ${Object.entries(st.seconds as Record<string, number>).map(([k, v]) => `${k} ${v.toFixed(0)}`).join('; ')}.`,
  ];
}

/** What noise_ablation.json keeps of one model folder's results. */
export function ablationSummary(label: string, dir: string): Json {
  const st = readJson(dir, 'steering_results.json');
  if (!st) throw new Error(`card: ${dir}/steering_results.json is missing: run organism:steer with ORGANISM_MODEL_DIR=${dir} first`);
  const cfg = readJson(dir, 'config.json');
  const ev = readJson(dir, 'eval_results.json');
  return {
    label,
    model_dir: path.relative(PROJECT_ROOT, dir),
    checkpoint_step: cfg?.steerlab_organism?.checkpoint_step ?? null,
    direction: st.direction,
    controller_held_out_accuracy: st.controller.held_out_accuracy,
    alpha: { picked: st.alpha.picked, dev_base: st.alpha.dev_base, dev_trials: st.alpha.dev_trials },
    held_out: (st.results as Json[]).map(({ set, condition, n, refusals, strict, rate, strict_rate, changed }) => ({ set, condition, n, refusals, strict, rate, strict_rate, changed })),
    targets: st.targets,
    base_targets_fp32: ev?.fp32?.targets ?? null,
    ...(st.smoke ? { smoke: st.smoke } : {}),
    ...(st.ablation ? { ablation: st.ablation } : {}),
  };
}

export function noiseBlock(ab: Json): string[] {
  const runs = ab.runs as Json[];
  const cell = (r: Json, set: string, cond: string) => (r.held_out as Json[]).find((c) => c.set === set && c.condition === cond);
  const kvs = (r: Json, set: string, cond: string) => {
    const c = cell(r, set, cond);
    return c ? `${pct(c.rate)} / ${pct(c.strict_rate)}` : '-';
  };
  const rows: (string | number)[][] = [
    ['checkpoint step', ...runs.map((r) => r.checkpoint_step ?? '-')],
    ['direction (residual index)', ...runs.map((r) => r.direction.selected?.residual_index ?? '-')],
    ['controller held-out accuracy', ...runs.map((r) => r.controller_held_out_accuracy?.toFixed(3) ?? '-')],
    ['alpha picked on dev', ...runs.map((r) => r.alpha.picked)],
  ];
  for (const [set, what] of [['jailbreak', 'held-out jailbreak'], ['harmless', 'held-out harmless'], ['harmful', 'held-out plain harmful'], ['alarming', 'held-out alarming']] as const) {
    for (const cond of ['base', 'was']) rows.push([`${what}, ${cond} (kw / strict %)`, ...runs.map((r) => kvs(r, set, cond))]);
  }
  const alphas = [...new Set(runs.flatMap((r) => (r.alpha.dev_trials as Json[]).map((t) => t.alpha as number)))].sort((a, b) => a - b);
  for (const a of alphas) {
    rows.push([`dev jailbreak WAS at alpha ${a} (kw / strict %)`, ...runs.map((r) => {
      const t = (r.alpha.dev_trials as Json[]).find((x) => x.alpha === a);
      return t ? `${pct(t.jailbreak)} / ${pct(t.jailbreak_strict)}` : '-';
    })]);
  }
  return [...table(['', ...runs.map((r) => r.label)], rows), '', ...(ab.note ? [ab.note] : [])];
}

/** Replaces each generated block of the card; a block whose source file is missing says so instead of a table. */
export function fillCard(card: string, dir: string): string {
  const blocks: Record<string, () => string[] | null> = {
    training: () => (readJson(dir, 'training_log.json') ? trainingBlock(readJson(dir, 'training_log.json')!) : null),
    data: () => (readJson(dir, 'training_log.json')?.data ? dataBlock(readJson(dir, 'training_log.json')!) : null),
    split: () => (readJson(dir, 'split_audit.json') && readJson(dir, 'framing_split.json') ? splitBlock(readJson(dir, 'split_audit.json')!, readJson(dir, 'framing_split.json')!) : null),
    base: () => (readJson(dir, 'eval_results.json') ? baseBlock(readJson(dir, 'eval_results.json')!) : null),
    steering: () => (readJson(dir, 'steering_results.json') ? steeringBlock(readJson(dir, 'steering_results.json')!) : null),
    noise: () => (readJson(dir, 'noise_ablation.json') ? noiseBlock(readJson(dir, 'noise_ablation.json')!) : null),
  };
  return card.replace(/<!-- card:([a-z]+) -->\n[\s\S]*?<!-- \/card:\1 -->/g, (_, name: string) => {
    const make = blocks[name];
    if (!make) throw new Error(`card: unknown block ${name} (expected ${Object.keys(blocks).join(', ')})`);
    const lines = make() ?? [`(not measured yet: its result file is missing from ${path.relative(PROJECT_ROOT, dir) || '.'})`];
    return [`<!-- card:${name} -->`, ...lines, `<!-- /card:${name} -->`].join('\n');
  });
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === '--ablation') {
    const runs = argv.slice(1).map((a) => {
      const m = /^([^=]+)=(.+)$/.exec(a);
      if (!m) throw new Error(`card --ablation: expected LABEL=MODEL_DIR, got ${a}`);
      return ablationSummary(m[1]!, path.resolve(m[2]!));
    });
    if (runs.length < 2) throw new Error('card --ablation: give at least two LABEL=MODEL_DIR runs to compare');
    const note = process.env.ABLATION_NOTE;
    await writeFileAtomic(path.join(MODEL_DIR, 'noise_ablation.json'), stableJson({ runs, ...(note ? { note } : {}) }));
    return;
  }
  if (argv.length > 0) throw new Error(`card: unexpected arguments ${argv.join(' ')} (expected none, or --ablation LABEL=DIR ...)`);
  const file = path.join(MODEL_DIR, 'MODEL_CARD.md');
  await writeFileAtomic(file, fillCard(readFileSync(file, 'utf8'), MODEL_DIR));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`card: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
