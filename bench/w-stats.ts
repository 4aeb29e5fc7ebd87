/**
 * The controllers' layer weights w and scale s on prompt files: mean and spread per layer, to see whether a
 * controller's w differs from uniform (0.5 everywhere). Prints JSON.
 *   npx tsx bench/w-stats.ts --model models/organism --controller paper=models/organism/controller.safetensors \
 *     --controller learned=/tmp/c.safetensors --file jailbreak=models/organism/eval/jailbreak.jsonl ...
 */
import { readFileSync } from 'node:fs';
import { controllerActivations } from '../src/core/method/activations.js';
import { loadControllerFor } from '../src/core/method/artifacts-node.js';
import { loadSteerableModel } from '../src/core/model/index.js';
import { fitDepsFromTokenizer, fitPrompt } from '../src/core/method/fit.js';

const a = process.argv.slice(2);
const get = (k: string) => a.flatMap((v, i) => (v === `--${k}` ? [a[i + 1]!] : []));
const model = await loadSteerableModel(get('model')[0]!);
const L = model.numLayers;
const out: Record<string, unknown> = {};
for (const spec of get('controller')) {
  const [name, file] = [spec.slice(0, spec.indexOf('=')), spec.slice(spec.indexOf('=') + 1)];
  const c = (await loadControllerFor(file, model)).method;
  for (const fspec of get('file')) {
    const [fname, path] = [fspec.slice(0, fspec.indexOf('=')), fspec.slice(fspec.indexOf('=') + 1)];
    // shortened as the flow shortens them (middle, room for 24 new tokens), so the controller reads what it reads there
    const deps = { ...fitDepsFromTokenizer(model.tokenizer), promptTokens: (u: string) => model.formatChat(u).ids.length };
    const prompts = readFileSync(path, 'utf8').split('\n').filter(Boolean)
      .map((l) => fitPrompt(deps, (JSON.parse(l) as { prompt: string }).prompt, { contextLength: model.contextLength, maxNewTokens: 24, mode: 'middle' }).text);
    const x = await controllerActivations(model, prompts, c.inputLayers);
    // one prediction per prompt row of x, as the flow makes it (controller/forward.ts)
    const width = x.length / prompts.length;
    const rows = prompts.map((_, r) => c.network.predict(x.subarray(r * width, (r + 1) * width)));
    const p = { scales: rows.map((o) => o.scale), layerWeights: Float32Array.from(rows.flatMap((o) => Array.from(o.layerWeights))) };
    const mean = (f: (r: number) => number) => prompts.reduce((s, _, r) => s + f(r), 0) / prompts.length;
    const wMean = Array.from({ length: L }, (_, l) => mean((r) => p.layerWeights[r * L + l]!));
    const wStd = Array.from({ length: L }, (_, l) => Math.sqrt(mean((r) => (p.layerWeights[r * L + l]! - wMean[l]!) ** 2)));
    out[`${name}/${fname}`] = {
      s_mean: mean((r) => p.scales[r]!),
      w_mean: wMean.map((v) => +v.toFixed(3)),
      w_std: wStd.map((v) => +v.toFixed(3)),
      // the effective per-layer patch coefficient s * w_l (uniform: s * 0.5)
      sw_mean: Array.from({ length: L }, (_, l) => +mean((r) => p.scales[r]! * p.layerWeights[r * L + l]!).toFixed(3)),
      uniform_s_half: +(mean((r) => p.scales[r]!) * 0.5).toFixed(3),
    };
  }
}
process.stdout.write(`${JSON.stringify(out, null, 1)}\n`);
await model.dispose();
