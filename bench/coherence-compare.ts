/**
 * A provisional coherence comparison of controllers on prompt files, until the eval runner records coherence itself:
 * every prompt goes through the method's flow (greedy) for base, uniform and was with each controller; each reply is
 * judged by the keyword judge and by the coherent-refusal rule (src/core/eval/coherence.ts), the reply_nll threshold
 * calibrated on the base replies to a calibration file. Prints one JSON object (rates per file, condition, controller).
 *
 *   npx tsx bench/coherence-compare.ts --model models/organism --direction models/organism/direction.safetensors \
 *     --controller paper=models/organism/controller.safetensors --controller learned=/tmp/c.safetensors \
 *     --calibration models/organism/dev/harmless.jsonl --calibration models/organism/dev/harmful.jsonl \
 *     --file jailbreak=models/organism/eval/jailbreak.jsonl ... \
 *     [--alpha 14] [--max-new-tokens 24] [--n 0] [--quantile 0.95]
 */
import { readFileSync } from 'node:fs';
import { getJudge } from '../src/core/eval/judges.js';
import { calibrateNllThreshold, changedFraction, judgeCoherentRefusal, replyNll } from '../src/core/eval/coherence.js';
import { wilsonInterval } from '../src/core/eval/stats.js';
import { loadControllerFor, loadDirectionFor } from '../src/core/method/artifacts-node.js';
import { runFlow, type MethodController } from '../src/core/method/flow.js';
import { loadSteerableModel } from '../src/core/model/index.js';
import type { SteeringPolicy } from '../src/core/steering/policies.js';

function args(): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) {
    if (!a[i]!.startsWith('--') || a[i + 1] === undefined) throw new Error(`expected --name value pairs, got ${a[i]}`);
    (out[a[i]!.slice(2)] ??= []).push(a[i + 1]!);
  }
  return out;
}
const A = args();
const one = (k: string, d?: string) => A[k]?.[0] ?? d ?? (() => { throw new Error(`--${k} is required`); })();
const pairs = (k: string) => (A[k] ?? []).map((v) => { const i = v.indexOf('='); return [v.slice(0, i), v.slice(i + 1)] as const; });
const prompts = (file: string, n: number) => {
  const rows = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { prompt: string }).prompt);
  return n > 0 ? rows.slice(0, n) : rows;
};

const n = Number(one('n', '0'));
const maxNewTokens = Number(one('max-new-tokens', '24'));
const alpha = Number(one('alpha', '14'));
const judge = getJudge(one('judge', 'arditi-keywords'));
const model = await loadSteerableModel(one('model'));
const dir = await loadDirectionFor(one('direction'), model);
const controllers: [string, MethodController][] = [];
for (const [name, file] of pairs('controller')) controllers.push([name, (await loadControllerFor(file, model)).method]);

interface Reply { tokenIds: number[]; text: string; finish: 'eos' | 'length' | 'abort'; nll: number | null; firstNll: number | null; refused: boolean }
async function reply(prompt: string, policy: SteeringPolicy, controller: MethodController | null): Promise<Reply> {
  const f = await runFlow(model, prompt, { direction: dir.file.direction, controller }, { policy, maxNewTokens, observeAlways: false });
  const ids = model.formatChat(f.fit.text).ids;
  const { nll, firstTokenNll } = await replyNll(model, ids, f.tokenIds);
  return { tokenIds: f.tokenIds, text: f.text, finish: f.finishReason, nll, firstNll: firstTokenNll, refused: (await judge.judge(f.text)).refused };
}

const t0 = performance.now();
// the model's own unsteered replies to every --calibration file (give both classes: its refusals are its text too)
const calibrationFiles = A.calibration ?? [];
if (calibrationFiles.length === 0) throw new Error('--calibration FILE (one or more) is required');
const calibrationReplies: Reply[] = [];
for (const file of calibrationFiles) for (const p of prompts(file, n)) calibrationReplies.push(await reply(p, { kind: 'off' }, null));
const calibration = calibrateNllThreshold(calibrationReplies.map((r) => r.nll), { set: calibrationFiles.join(' + '), quantile: Number(one('quantile', '0.95')) });
console.error(`calibration: ${JSON.stringify(calibration)}`);

const rows: Record<string, unknown>[] = [];
const rate = (k: number, total: number) => wilsonInterval(k, total);
for (const [fileName, file] of pairs('file')) {
  const ps = prompts(file, n);
  const base: Reply[] = [];
  for (const p of ps) base.push(await reply(p, { kind: 'off' }, null));
  const conds: [string, Reply[]][] = [['base', base]];
  for (const [cname, c] of controllers) {
    for (const kind of ['uniform', 'was'] as const) {
      const out: Reply[] = [];
      for (const p of ps) out.push(await reply(p, { kind, alpha }, c));
      conds.push([`${kind}:${cname}`, out]);
    }
    console.error(`${fileName} ${cname} done (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
  for (const [cond, rs] of conds) {
    const coherent = rs.filter((r) => judgeCoherentRefusal({ refused: r.refused, replyNll: r.nll, text: r.text, finishReason: r.finish }, calibration).coherentRefusal).length;
    const nlls = rs.map((r) => r.nll).filter((x): x is number => x !== null);
    rows.push({
      file: fileName, condition: cond, n: rs.length,
      keyword: rate(rs.filter((r) => r.refused).length, rs.length),
      coherent: rate(coherent, rs.length),
      mean_reply_nll: nlls.reduce((a, b) => a + b, 0) / nlls.length,
      mean_first_token_nll: rs.reduce((a, r) => a + (r.firstNll ?? 0), 0) / rs.length,
      examples: rs.slice(0, 3).map((r) => r.text),
      changed_from_base: changedFraction(rs.map((r, i) => ({ base: base[i]!.tokenIds, steered: r.tokenIds }))),
    });
  }
}
process.stdout.write(`${JSON.stringify({ calibration, judge: judge.id, alpha, max_new_tokens: maxNewTokens, seconds: (performance.now() - t0) / 1000, rows }, null, 1)}\n`);
await model.dispose();
