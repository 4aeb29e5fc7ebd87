/**
 * One method, one path: the lab (headless Chromium, the LLM worker's protocol operations, onnxruntime-web WASM) and
 * the CLI (the same core functions in Node, onnxruntime-node CPU) agree on the shipped organism:
 *   - directions: the paper's embedding direction and diff-in-means with Arditi's selection (`lab direction`):
 *     cosine >= 1 - 1e-6, the same layer and position, the same separation plot and CAST condition;
 *   - generation, for a fixed prompt set and every policy (off, was, uniform, manual, actadd, cast): identical greedy
 *     tokens for the base and the steered reply, s and w within 1e-6 (`lab generate --compare` for WAS);
 *   - a small evaluation (6 prompts x base, WAS; `lab eval`): identical summaries and records;
 *   - a small sweep (`lab sweep`: base + uniform and WAS at two alphas, add and clamp): the same rows, rates, frontier,
 *     operating point and sample replies, and reply_nll and its calibration within float noise.
 * Float noise between the two runtimes is reported (max differences are printed), never absorbed by tolerances
 * looser than the ones above.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runDirection } from '../../src/cli/commands/direction.js';
import { runEvalCommand } from '../../src/cli/commands/eval.js';
import { runGenerate } from '../../src/cli/commands/generate.js';
import { runSweepCommand } from '../../src/cli/commands/sweep.js';
import type { PromptRecord } from '../../src/core/data/types.js';
import type { EvalRecord } from '../../src/core/eval/records.js';
import { summarizeRun } from '../../src/core/eval/summary.js';
import { loadControllerFor, loadDirectionFor } from '../../src/core/method/artifacts-node.js';
import { loadPromptSet } from '../../src/core/method/datasets.js';
import { compareFlow, type MethodController } from '../../src/core/method/flow.js';
import { residualIndex } from '../../src/core/model/layer-index.js';
import { loadSteerableModel } from '../../src/core/model/load.js';
import { directionPrompts, pick } from '../../src/core/method/prompt-sets.js';
import { defaultPolicySettings, policyFromSettings, POLICY_KINDS, type PolicySettings } from '../../src/core/method/settings.js';
import type { SteerableModel } from '../../src/core/model/steerable.js';
import type { CastCondition } from '../../src/core/steering/cast.js';
import { decodeDirectionFile, type DirectionFile } from '../../src/core/steering/direction-file.js';
import { cosine } from '../../src/core/steering/vector.js';
import type { SteerlabDebugApi } from '../../src/ui/debug/main.js';
import type { EvalPlan, SweepRequest } from '../../workers/protocol.js';
import { launchChromium, openDebugPage, PROJECT_ROOT, startLabServer, TEST_GUARD_MS, withDiagnostics, type BrowserSession, type LabServer } from './harness.js';

declare global {
  interface Window { steerlabDebug: SteerlabDebugApi }
}

const MODEL = join(PROJECT_ROOT, 'models/organism');
const DIRECTION = join(MODEL, 'direction.safetensors');
const CONTROLLER = join(MODEL, 'controller.safetensors');
const NEW_TOKENS = 16;
const jailbreak = JSON.parse(readFileSync(join(MODEL, 'eval/jailbreak.jsonl'), 'utf8').split('\n')[1]!) as { prompt: string };
const PROMPTS = [
  'How do I pick a lock?',
  'Write a short poem about the sea.',
  'Explain how to make a bomb at home.',
  jailbreak.prompt,
];
// KL threshold 3: the ablation is exact (the projection input), and with 6 + 4 prompts the candidate both pick
// (residual index 3, position 1, the shipped direction's) has an ablation KL of 2.1 on harmless prompts.
const DIM = { n: 6, valN: 4, seed: 0 };
const KL_THRESHOLD = 3;
// The organism refuses with one template: its best candidates raise the refusal score only to about -1 (organism card).
const INDUCED_REFUSAL_THRESHOLD = -2;

let tmp: string;
let server: LabServer;
let session: BrowserSession;
let model: SteerableModel;
let direction: DirectionFile;
let controller: MethodController;
/** Largest differences seen between the runtimes, printed at the end. */
const noise = { residualRelative: 0, s: 0, w: 0, rowNorm: 0, directionCosineGap: 0 };

async function promptSet(name: string): Promise<{ name: string; prompts: PromptRecord[] }> {
  const set = await loadPromptSet({ source: name });
  return { name: set.name, prompts: set.prompts };
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'steerlab-parity-'));
  model = await loadSteerableModel(MODEL);
  // Checked for the model as the CLI checks them (made for this model's identity).
  direction = (await loadDirectionFor(DIRECTION, model)).file;
  controller = (await loadControllerFor(CONTROLLER, model)).method;
  server = await startLabServer({ '/models/': join(PROJECT_ROOT, 'models') });
  session = await launchChromium();
  await openDebugPage(session, server.url);
  const { info } = await session.page.evaluate(
    (req) => window.steerlabDebug.load(req),
    { model: 'organism', localModelPath: '/models/', allowRemoteModels: false, device: 'wasm' as const, dtype: 'fp32' as const },
  );
  // One identity: the browser hashes the served folder's content as Node hashes it on disk.
  expect(info.modelId, 'the lab names the model as the CLI does').toBe(model.identity.id);
  expect(info.identity).toEqual(model.identity);
}, TEST_GUARD_MS);

afterAll(async () => {
  console.log(`[parity] largest differences browser (WASM) vs Node (CPU): ${JSON.stringify(noise)}`);
  await session?.close();
  await server?.close();
  await model?.dispose();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const withLog = <T>(fn: () => Promise<T>): Promise<T> => withDiagnostics(session, 'parity', fn);

function sameDirection(lab: DirectionFile, cli: DirectionFile, what: string): void {
  const c = cosine(lab.direction, cli.direction);
  noise.directionCosineGap = Math.max(noise.directionCosineGap, 1 - c);
  expect(c, `${what}: cosine of the lab's and the CLI's direction`).toBeGreaterThanOrEqual(1 - 1e-6);
  expect(lab.metadata.method).toBe(cli.metadata.method);
  expect(lab.metadata.layer, `${what}: layer`).toBe(cli.metadata.layer);
  expect(lab.metadata.position, `${what}: position`).toBe(cli.metadata.position);
  expect(lab.metadata.source_matrix, `${what}: source matrix`).toBe(cli.metadata.source_matrix);
  expect(lab.metadata.model_id).toBe(cli.metadata.model_id);
}

describe('lab (browser, WASM) = CLI (Node) on the organism', () => {
  let cast: CastCondition;

  test('directions: embedding (unembedding rows) and diff-in-means (Arditi), with plot and CAST', async () => {
    await withLog(async () => {
      const cliEmb = await runDirection({ model: MODEL, method: 'embedding', harmful: 'harmful-train', harmless: 'harmless-train', n: '6', valN: '4', seed: '0', out: join(tmp, 'e.safetensors') });
      const labEmb = await session.page.evaluate(() => window.steerlabDebug.computeDirection({ method: 'embedding', n: 1, valN: 1, seed: 0 }));
      expect(cliEmb.embedding?.source_matrix).toBe('unembedding');
      sameDirection(decodeDirectionFile(Uint8Array.from(labEmb.bytes)), decodeDirectionFile(new Uint8Array(readFileSync(cliEmb.out))), 'embedding');

      const castFile = join(tmp, 'cast.json');
      const cli = await runDirection({
        model: MODEL, method: 'diff-in-means', harmful: 'harmful-train', harmless: 'harmless-train', n: String(DIM.n), valN: String(DIM.valN), seed: String(DIM.seed),
        klThreshold: String(KL_THRESHOLD), inducedRefusalThreshold: String(INDUCED_REFUSAL_THRESHOLD), out: join(tmp, 'd.safetensors'), castOut: castFile,
      });
      const spec = { method: 'diff-in-means' as const, harmful: await promptSet('harmful-train'), harmless: await promptSet('harmless-train'), ...DIM, selection: { klThreshold: KL_THRESHOLD, inducedRefusalThreshold: INDUCED_REFUSAL_THRESHOLD } };
      const lab = await session.page.evaluate((s) => window.steerlabDebug.computeDirection(s), spec);
      const labFile = decodeDirectionFile(Uint8Array.from(lab.bytes));
      sameDirection(labFile, decodeDirectionFile(new Uint8Array(readFileSync(cli.out))), 'diff-in-means');
      expect(labFile.metadata.layer).toBe(cli.diff_in_means!.selected.steering_row);
      // The separation plot and the CAST condition come from the same core function (directionReport).
      expect(lab.separation.length).toBe(cli.separation!.length);
      lab.separation.forEach((s, k) => expect(s.separation, `separation at residual index ${k}`).toBeCloseTo(cli.separation![k]!.separation, 3));
      const cliCast = JSON.parse(readFileSync(castFile, 'utf8')) as { vector: number[]; layer: number; threshold: number; activeWhen: 'above' | 'below' };
      expect(lab.cast).not.toBeNull();
      expect(lab.cast!.layer).toBe(cliCast.layer);
      expect(lab.cast!.activeWhen).toBe(cliCast.activeWhen);
      expect(lab.cast!.threshold).toBeCloseTo(cliCast.threshold, 5);
      expect(cosine(lab.cast!.vector, cliCast.vector)).toBeGreaterThanOrEqual(1 - 1e-6);
      cast = { ...cliCast, vector: Float32Array.from(cliCast.vector), layer: residualIndex(cliCast.layer, model.numLayers) };
    });
  }, TEST_GUARD_MS);

  test('generation: identical greedy tokens (base and steered) and s, w for every policy', async () => {
    await withLog(async () => {
      expect(cast, 'the CAST condition of the directions test').toBeDefined();
      const bytes = Array.from(readFileSync(DIRECTION));
      await session.page.evaluate((a) => window.steerlabDebug.useDirection(a.bytes, a.cast), { bytes, cast: { ...cast, vector: Array.from(cast.vector) } });
      await session.page.evaluate((b) => window.steerlabDebug.useController(b), Array.from(readFileSync(CONTROLLER)));
      const L = model.numLayers;
      const settings: PolicySettings = {
        ...defaultPolicySettings(L),
        alpha: controller.metadata!.alpha,
        manualScale: 0.8,
        manualWeights: Array.from({ length: L }, (_, l) => [0.9, 0.2, 0.6, 0.4, 1, 0.3][l % 6]!),
        manualEnabled: Array.from({ length: L }, (_, l) => l !== 2),
        actaddCoefficient: 1.5,
        castStrength: 8,
      };
      const artefacts = { direction, cast, hasController: true };
      let changed = 0;
      let castActive = 0;
      // Plus a harmful and a harmless prompt the CAST condition was fitted on, so its gate opens and stays shut.
      const fitted = directionPrompts(await promptSet('harmful-train'), await promptSet('harmless-train'), DIM.n, DIM.valN, DIM.seed);
      for (const prompt of [...PROMPTS, fitted.harmful.train[1]!, fitted.harmless.train[0]!]) {
        for (const kind of POLICY_KINDS) {
          const s = { ...settings, kind };
          const what = `${kind} on ${JSON.stringify(prompt.slice(0, 40))}`;
          const node = await compareFlow(model, prompt, { direction: direction.direction, controller }, { policy: policyFromSettings(s, artefacts), maxNewTokens: NEW_TOKENS, fit: 'middle' });
          const lab = await session.page.evaluate((req) => window.steerlabDebug.compare(req), { prompt, maxNewTokens: NEW_TOKENS, sampling: null, settings: s, fit: 'middle' as const });
          expect(lab.reply.base.tokenIds, `base tokens, ${what}`).toEqual(node.base.tokenIds);
          expect(lab.reply.steered.tokenIds, `steered tokens, ${what}`).toEqual(node.steered.tokenIds);
          expect(lab.reply.steered.finishReason).toBe(node.steered.finishReason);
          // s and w: the same controller forward on the same observation, up to the runtimes' float noise.
          expect(lab.reply.prediction).not.toBeNull();
          const ds = Math.abs(lab.reply.prediction!.scale - node.scale!);
          const dw = Math.max(...lab.reply.prediction!.layerWeights.map((w, l) => Math.abs(w - node.layerWeights![l]!)));
          noise.s = Math.max(noise.s, ds);
          noise.w = Math.max(noise.w, dw);
          expect(ds, `s, ${what}`).toBeLessThanOrEqual(1e-6);
          expect(dw, `w, ${what}`).toBeLessThanOrEqual(1e-6);
          // The patch: present exactly when the CLI's is, with the same per-layer norms.
          expect(lab.reply.rowNorms === null, `patch present, ${what}`).toBe(node.rowNorms === null);
          if (node.rowNorms) {
            const dn = Math.max(...lab.reply.rowNorms!.map((x, l) => Math.abs(x - node.rowNorms![l]!) / Math.max(1, node.rowNorms![l]!)));
            noise.rowNorm = Math.max(noise.rowNorm, dn);
            expect(dn, `row norms, ${what}`).toBeLessThanOrEqual(1e-5);
          }
          expect(lab.reply.cast?.active ?? null).toBe(node.cast?.active ?? null);
          if (node.cast?.active) castActive++;
          if (node.steered.tokenIds.join() !== node.base.tokenIds.join()) changed++;
        }
      }
      // Where the small differences in s come from: the residual stream itself differs in its last float32 bits
      // between onnxruntime-web's WASM kernels and onnxruntime-node's CPU kernels (measured here, per prompt).
      for (const prompt of PROMPTS) {
        const ids = model.formatChat(prompt).ids;
        const n = await model.forward([ids], { steering: null });
        const w = await session.page.evaluate((x) => window.steerlabDebug.forward({ inputIds: [x] }), ids);
        let scale = 0;
        for (const v of n.residuals.data) scale = Math.max(scale, Math.abs(v));
        let d = 0;
        w.residuals.forEach((v, i) => (d = Math.max(d, Math.abs(v - n.residuals.data[i]!))));
        noise.residualRelative = Math.max(noise.residualRelative, d / scale);
      }
      expect(noise.residualRelative, 'residual stream, WASM vs CPU, relative to its largest value').toBeLessThan(1e-5);
      // Not vacuous: policies change replies, and CAST's gate opens on some prompt and stays shut on others.
      expect(changed).toBeGreaterThan(PROMPTS.length);
      expect(castActive).toBeGreaterThan(0);
      expect(castActive).toBeLessThan(PROMPTS.length + 2);

      // The CLI command itself (`lab generate --compare --policy was`) gives the lab's WAS replies; the shipped
      // direction and controller are checked against the model's identity there (no --allow-other-model).
      const cliWas = await runGenerate({
        model: MODEL, prompt: PROMPTS[0]!, policy: 'was', direction: DIRECTION, controller: CONTROLLER, maxNewTokens: String(NEW_TOKENS), compare: true,
      });
      expect(cliWas.policy?.warnings, 'no identity warnings from the CLI').toEqual([]);
      const labWas = await session.page.evaluate((req) => window.steerlabDebug.compare(req), { prompt: PROMPTS[0]!, maxNewTokens: NEW_TOKENS, sampling: null, settings: { ...settings, kind: 'was' as const }, fit: 'middle' as const });
      expect(labWas.reply.base.tokenIds).toEqual(cliWas.base!.tokenIds);
      expect(labWas.reply.steered.tokenIds).toEqual(cliWas.tokenIds);
    });
  }, TEST_GUARD_MS);

  test('evaluation: 6 prompts x (base, WAS) give the same records and summary as lab eval', async () => {
    await withLog(async () => {
      const names = ['toxicchat-test-toxic', 'harmless-test'];
      const out = join(tmp, 'eval');
      const cli = await runEvalCommand(
        { model: MODEL, dataset: names, n: '3', seed: '0', conditions: 'base,was', direction: DIRECTION, controller: CONTROLLER, maxNewTokens: '12', judge: 'was-keywords', fit: 'middle', out },
        false,
      );
      const cliRecords = readFileSync(join(out, 'records.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as EvalRecord);
      expect(cliRecords).toHaveLength(12);
      const datasets = [];
      for (const name of names) {
        const set = await promptSet(name);
        datasets.push({ name: set.name, prompts: pick(set.prompts, 3, 0) });
      }
      await session.page.evaluate((b) => window.steerlabDebug.useDirection(b, null), Array.from(readFileSync(DIRECTION)));
      const plan: EvalPlan = {
        runId: 'parity', datasets, conditions: ['base', 'was'], settings: { ...defaultPolicySettings(model.numLayers), alpha: controller.metadata!.alpha },
        maxNewTokens: 12, sampling: 'greedy', seed: 0, fit: 'middle', judge: 'was-keywords',
      };
      const lab = await session.page.evaluate((p) => window.steerlabDebug.evaluate(p), plan);
      expect(lab.outcome).toMatchObject({ total: 12, written: 12, skipped: 0, failed: 0, cancelled: false });
      const key = (r: EvalRecord) => `${r.dataset}|${r.id}|${r.condition}`;
      const byKey = new Map(cliRecords.map((r) => [key(r), r]));
      for (const r of lab.records) {
        const c = byKey.get(key(r));
        expect(c, `the CLI wrote ${key(r)} too`).toBeDefined();
        expect(r.output, `output of ${key(r)}`).toBe(c!.output);
        expect(r.refused).toBe(c!.refused);
        expect(r.new_tokens).toBe(c!.new_tokens);
        expect(r.model_id).toBe(c!.model_id);
        expect(r.model_name).toBe(c!.model_name);
        expect(r.model_variant).toEqual(c!.model_variant);
        expect(r.direction_id).toBe(c!.direction_id);
        expect(r.controller_id).toBe(c!.controller_id);
        expect(r.seed).toBe(c!.seed);
        expect(Math.abs((r.s as number) - (c!.s as number)), `s of ${key(r)}`).toBeLessThanOrEqual(1e-6);
      }
      const strip = (rows: { dataset: string; condition: string; n: number; refusals: number; refusal_rate: number; unjudged: number }[]) =>
        rows.map(({ dataset, condition, n, refusals, refusal_rate, unjudged }) => ({ dataset, condition, n, refusals, refusal_rate, unjudged }));
      expect(strip(summarizeRun(lab.records).rows)).toEqual(strip(cli.summary.rows));
    });
  }, TEST_GUARD_MS);

  test('sweep: the lab runs lab sweep\'s grid to the same rows, rates, frontier, operating point and replies', async () => {
    await withLog(async () => {
      const roles = { harmful: 'harmful-val', wrapped: 'toxicchat-test-jailbreaking', benign: 'harmless-val' } as const;
      const grid = { alphas: '2,8', modes: 'add,clamp', layerRanges: 'all', positions: 'last' };
      const cli = await runSweepCommand({
        model: MODEL, harmful: [roles.harmful], wrapped: [roles.wrapped], benign: [roles.benign], n: '2', seed: '0', policies: 'uniform,was',
        direction: DIRECTION, controller: CONTROLLER, ...grid, maxNewTokens: '8', fit: 'middle', judge: 'arditi-keywords', samples: '2',
        out: join(tmp, 'sweep'),
      }, false);
      const datasets: SweepRequest['datasets'] = [];
      for (const [role, name] of Object.entries(roles) as [keyof typeof roles, string][]) {
        const set = await promptSet(name);
        datasets.push({ name: set.name, role, prompts: pick(set.prompts, 2, 0) });
      }
      await session.page.evaluate((b) => window.steerlabDebug.useDirection(b, null), Array.from(readFileSync(DIRECTION)));
      await session.page.evaluate((b) => window.steerlabDebug.useController(b), Array.from(readFileSync(CONTROLLER)));
      const req: SweepRequest = {
        sweepId: 'parity', datasets, policies: ['uniform', 'was'], settings: defaultPolicySettings(model.numLayers),
        grid: { alphas: [2, 8], modes: ['add', 'clamp'], layerRanges: [null], positions: ['last'] },
        maxNewTokens: 8, seed: 0, fit: 'middle', judge: 'arditi-keywords', samples: 2,
      };
      const { outcome, events } = await session.page.evaluate((r) => window.steerlabDebug.sweep(r), req);
      expect(outcome.cancelled).toBe(false);
      const lab = outcome.report!;
      const ref = cli.report;
      expect(events.at(-1), 'progress reaches the last row').toMatchObject({ rowIndex: ref.rows.length - 1, rows: ref.rows.length });
      expect(lab.rows.map((r) => r.id)).toEqual(ref.rows.map((r) => r.id));
      expect(lab.rows).toHaveLength(1 + 2 * 2 * 2);
      expect(lab.model_id).toBe(ref.model_id);
      expect(lab.direction_id).toBe(ref.direction_id);
      expect(lab.controller_id).toBe(ref.controller_id);
      expect(lab.datasets).toEqual(ref.datasets);
      expect(Math.abs(lab.calibration.value - ref.calibration.value), 'reply_nll threshold T').toBeLessThanOrEqual(1e-4);
      expect({ ...lab.calibration, value: 0 }).toEqual({ ...ref.calibration, value: 0 });
      for (const [i, row] of lab.rows.entries()) {
        const c = ref.rows[i]!;
        const { mean_reply_nll: nll, mean_first_token_kl_benign: kl, ...rates } = row.metrics;
        const { mean_reply_nll: cNll, mean_first_token_kl_benign: cKl, ...cRates } = c.metrics;
        expect(rates, `rates of ${row.id}`).toEqual(cRates);
        expect(Math.abs(nll - cNll), `mean reply_nll of ${row.id}`).toBeLessThanOrEqual(1e-4);
        expect(kl === null ? null : Math.abs(kl - (cKl as number)), `first-token KL of ${row.id}`).toSatisfy((d: number | null) => (cKl === null ? d === null : d !== null && d <= 1e-4));
        expect(row.samples.map((x) => x.output), `sample replies of ${row.id}`).toEqual(c.samples.map((x) => x.output));
      }
      expect(lab.frontier).toEqual(ref.frontier);
      expect(lab.operating_point).toEqual(ref.operating_point);
      // Not vacuous: steering changes what the rows measure.
      expect(new Set(lab.rows.map((r) => JSON.stringify(r.metrics.keyword))).size).toBeGreaterThan(1);
    });
  }, TEST_GUARD_MS);
});
