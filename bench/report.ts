/** bench/RESULTS.md from results.json: the same numbers as tables, each goal marked met or missed. */
import type { Summary } from './stats.js';

interface Results {
  generated_at: string;
  mode: string;
  duration_s: number;
  machine: Record<string, unknown>;
  goals: {
    decode_ratio_min: number;
    prefill_capture_overhead_max: number;
    controller_infer_ms_max: number;
    patch_seconds_max_for_500mb: number;
    patch_peak_extra_max_x_file: number;
    capture_none_overhead_max?: number;
    load_ratio_max?: number;
    peer_ratio_min?: Record<string, number>;
    eval_batch_speedup_min?: { node: number; chromium_wasm: number };
    compare_over_plain_max?: number;
  };
  decode: Record<string, any>[];
  prefill: Record<string, any>[];
  patch: Record<string, any>[];
  controller: Record<string, any>[];
  eval: Record<string, any>[];
  /** Older results files have no compare section. */
  compare?: Record<string, any>[];
  browser: Record<string, any> | null;
  capture?: Record<string, any>[];
  load?: Record<string, any>[];
  peer?: Record<string, any>[];
  eval_batch?: Record<string, any>[];
  prefill_head?: Record<string, any>[];
  projection?: Record<string, any>[];
  skipped: string[];
  notes: string[];
}

const f = (x: unknown, d = 2) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '–');
const pct = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)} %` : '–');
const mb = (b: unknown) => (typeof b === 'number' ? `${(b / 1e6).toFixed(0)} MB` : '–');
const spread = (s: Summary | undefined, d = 2) => (s ? `${f(s.median, d)} (${f(s.min, d)}–${f(s.max, d)})` : '–');
const mark = (ok: boolean) => (ok ? 'met' : '**missed**');

export function renderMarkdown(r: Results): string {
  const g = r.goals;
  const m = r.machine;
  const out: string[] = [];
  out.push(`# Benchmark results (${r.mode} run)`, '');
  out.push(`Generated ${r.generated_at} in ${f(r.duration_s, 0)} s by \`npm run bench${r.mode === 'quick' ? ' -- --quick' : ''}\`.`, '');
  out.push(`Machine: ${m.cpu_model}, ${m.cpu_cores} cores, ${mb(m.memory_bytes)} RAM, ${m.platform}; Node ${m.node}, onnxruntime-node ${m.onnxruntime_node}, transformers.js ${m.transformers_js} (onnxruntime-web ${m.onnxruntime_web}), tfjs ${m.tfjs}; commit ${m.git_commit}.`);
  out.push(`Load average at start ${JSON.stringify(m.load_average_at_start)}, at end ${JSON.stringify(m.load_average_at_end)} (a shared machine: other jobs ran during the run, so the spreads are wide).`, '');
  out.push('Each figure: median (min–max) over repeated runs; the variants of one measurement run interleaved (rotated order per repeat). Models: random weights, real shapes (SmolLM2-135M: 30 layers x 576; Qwen2.5-0.5B: 24 layers x 896), fp32, `plain` (optimum-style ops) and `fused` (onnxruntime-genai style: SkipSimplifiedLayerNormalization, GroupQueryAttention); the Qwen2.5 shape is over 1.5 GB and uses external data.', '');

  out.push('## Decode (tokens/s, greedy, cached steps after the first token)', '');
  out.push(`Goal: patched / unpatched >= ${g.decode_ratio_min} with zero steering and with a WAS-like steering matrix. Ratios are paired per repeat, median over repeats.`, '');
  out.push('| model | topology | runtime | unpatched | patched, zero | patched, WAS | ratio zero | ratio WAS | CPU-time ratio zero / WAS | goal (wall / CPU) |', '|---|---|---|---:|---:|---:|---:|---:|---:|---|');
  for (const d of r.decode) {
    const ok = d.ratio_zero >= g.decode_ratio_min && d.ratio_was >= g.decode_ratio_min;
    const okCpu = d.cpu_ratio_zero >= g.decode_ratio_min && d.cpu_ratio_was >= g.decode_ratio_min;
    out.push(`| ${d.model} | ${d.topology} | ${d.runtime} | ${spread(d.unpatched)} | ${spread(d.patched_zero)} | ${spread(d.patched_was)} | ${f(d.ratio_zero, 3)} (${f(d.ratio_zero_spread?.min, 2)}–${f(d.ratio_zero_spread?.max, 2)}) | ${f(d.ratio_was, 3)} (${f(d.ratio_was_spread?.min, 2)}–${f(d.ratio_was_spread?.max, 2)}) | ${f(d.cpu_ratio_zero, 3)} / ${f(d.cpu_ratio_was, 3)} | ${mark(ok)} / ${mark(okCpu)} |`);
  }
  if (r.browser && !r.browser.error) {
    const b = r.browser;
    out.push(`| ${b.model} | ${b.topology} | ${b.runtime} | ${b.unpatched_tok_s === null ? 'n/a' : f(b.unpatched_tok_s)} | ${spread(b.patched_zero)} | ${spread(b.patched_was)} | ${b.ratio_zero === null ? 'n/a' : f(b.ratio_zero, 3)} | ${b.ratio_was === null ? 'n/a' : f(b.ratio_was, 3)} | n/a | ${b.ratio_zero === null ? 'see Browser' : mark(b.ratio_zero >= g.decode_ratio_min && b.ratio_was >= g.decode_ratio_min)} |`);
  }
  out.push('');
  out.push('Where the decode time goes: `patched_raw` = the patched graph under transformers.js\'s own generate() with zero steering (no Steerlab generate flow), ratio to unpatched paired per repeat; CPU ms = CPU time of the process (all threads) per cached step, unpatched / raw / zero / WAS; load average (1 min) when the measurement started and ended.', '');
  out.push('| model | topology | patched_raw tok/s | ratio raw (wall / CPU) | CPU ms per step | load average |', '|---|---|---:|---|---|---|');
  for (const d of r.decode) {
    const c = d.cpu_ms_per_token ?? {};
    out.push(`| ${d.model} | ${d.topology} | ${spread(d.patched_raw)} | ${f(d.ratio_raw, 3)} / ${f(d.cpu_ratio_raw, 3)} | ${f(c.unpatched?.median, 1)} / ${f(c.patched_raw?.median, 1)} / ${f(c.patched_zero?.median, 1)} / ${f(c.patched_was?.median, 1)} | ${f(d.load_average?.start?.[0], 1)} → ${f(d.load_average?.end?.[0], 1)} |`);
  }
  out.push('');

  out.push('## Prefill', '');
  out.push(`Goal: residual capture adds <= ${100 * g.prefill_capture_overhead_max} % to prefill. The patched graph always computes and returns \`residual_stream\` [B, L+1, S, H] (there is no switch to turn capture off), so the transformers.js rows compare the patched graph with the unpatched one; the onnxruntime rows split the cost with graph variants: \`patched_none\` (steering only, residual_stream emptied) and \`patched_last\` (only the last position captured, what WAS needs from a prefill).`, '');
  out.push('| model | topology | level | tokens | timings (s) | overhead | goal |', '|---|---|---|---:|---|---|---|');
  for (const p of r.prefill) {
    if (p.seconds) {
      const t = Object.entries(p.seconds as Record<string, Summary>).map(([k, v]) => `${k} ${spread(v, 3)}`).join('; ');
      const ov = `wall vs unpatched: ${Object.entries(p.overhead_vs_unpatched as Record<string, number>).map(([k, v]) => `${k} ${pct(v)}`).join(', ')}; capture full vs none ${pct(p.capture_overhead_full_vs_none)}${p.capture_overhead_last_vs_none !== null ? `; last vs none ${pct(p.capture_overhead_last_vs_none)}` : ''}. CPU time: capture full vs none ${pct(p.cpu_capture_overhead_full_vs_none)}${p.cpu_capture_overhead_last_vs_none !== null ? `, last vs none ${pct(p.cpu_capture_overhead_last_vs_none)}` : ''}; vs unpatched ${Object.entries((p.cpu_overhead_vs_unpatched ?? {}) as Record<string, number>).map(([k, v]) => `${k} ${pct(v)}`).join(', ')}`;
      out.push(`| ${p.model} | ${p.topology} | ${p.level} | ${p.prefill_tokens} | ${t} | ${ov} | ${mark(p.capture_overhead_full_vs_none <= g.prefill_capture_overhead_max)} / ${mark(p.cpu_capture_overhead_full_vs_none <= g.prefill_capture_overhead_max)} (wall / CPU, full capture) |`);
    } else {
      out.push(`| ${p.model} | ${p.topology} | ${p.level} | ${p.prefill_tokens} | unpatched ${spread(p.unpatched_s, 3)}; patched ${spread(p.patched_s, 3)} | wall ${pct(p.overhead)}, CPU time ${pct(p.cpu_overhead)} (residual read-back ${mb(p.residual_bytes)}) | ${mark(p.overhead <= g.prefill_capture_overhead_max)} / ${mark(p.cpu_overhead <= g.prefill_capture_overhead_max)} (wall / CPU) |`);
    }
  }
  out.push('');

  if (r.projection?.length) {
    out.push('## The projection input', '');
    out.push('Raw onnxruntime-node sessions of the patch with the `projection` input against the same patch without it (the earlier, steering-only patch): zero = both inputs zero (what every unsteered or add-mode pass runs), on = a unit projection row and a steering row at every layer (clamp mode). Time ratios paired per repeat (1.00 = no cost).', '');
    out.push('| model | topology | decode s/step (steering only; zero; on) | decode ratio zero / on (wall; CPU) | prefill s (steering only; zero; on) | prefill ratio zero / on (wall; CPU) | load average |', '|---|---|---|---|---|---|---|');
    for (const p of r.projection) {
      const d = p.decode_s_per_step;
      const q = p.prefill_s;
      out.push(`| ${p.model} | ${p.topology} | ${spread(d.steering_only, 4)}; ${spread(d.projection_zero, 4)}; ${spread(d.projection_on, 4)} | ${spread(p.decode_time_ratio_vs_steering_only.projection_zero, 3)} / ${spread(p.decode_time_ratio_vs_steering_only.projection_on, 3)}; CPU ${f(p.decode_cpu_ratio_vs_steering_only?.projection_zero?.median, 3)} / ${f(p.decode_cpu_ratio_vs_steering_only?.projection_on?.median, 3)} | ${spread(q.steering_only, 3)}; ${spread(q.projection_zero, 3)}; ${spread(q.projection_on, 3)} | ${spread(p.prefill_time_ratio_vs_steering_only.projection_zero, 3)} / ${spread(p.prefill_time_ratio_vs_steering_only.projection_on, 3)}; CPU ${f(p.prefill_cpu_ratio_vs_steering_only?.projection_zero?.median, 3)} / ${f(p.prefill_cpu_ratio_vs_steering_only?.projection_on?.median, 3)} | ${f(p.load_average?.start?.[0], 1)} → ${f(p.load_average?.end?.[0], 1)} |`);
    }
    out.push('');
  }

  out.push('## Patch time and memory', '');
  out.push(`Goal: a 500 MB model patches in <= ${g.patch_seconds_max_for_500mb} s with peak extra memory <= ${g.patch_peak_extra_max_x_file}x the file size. Peak extra = peak RSS of a fresh process during the patch minus its RSS with the input already read; "x model" divides by the whole model (graph + external data). With external data the patcher reads and rewrites only the small graph file.`, '');
  out.push('| model | topology | .onnx size | external data | seconds | peak extra | x model | goal |', '|---|---|---:|---:|---|---:|---:|---|');
  for (const p of r.patch) {
    const ok = p.seconds <= g.patch_seconds_max_for_500mb * Math.max(1, p.model_bytes / 500e6) && p.peak_extra_x_file <= g.patch_peak_extra_max_x_file;
    out.push(`| ${p.model} | ${p.topology} | ${mb(p.file_bytes)} | ${p.external_data_bytes ? mb(p.external_data_bytes) : '–'} | ${spread(p.seconds_spread, 3)} | ${mb(p.peak_extra_bytes)} | ${f(p.peak_extra_x_file, 3)} | ${mark(ok)} |`);
  }
  out.push('');

  out.push('## Controller (tfjs, Node)', '');
  out.push(`Goal: inference <= ${g.controller_infer_ms_max} ms per prompt. Training: one epoch over 1000 cached prompts (synthetic activations of the controller's input size), paper defaults (hidden width 1024, batch 4, AdamW).`, '');
  out.push('| shape | backend | input size | inference ms/prompt | train s/epoch (1000 prompts) | measured on | goal |', '|---|---|---:|---|---:|---|---|');
  for (const c of r.controller) {
    out.push(`| ${c.shape} | ${c.backend} | ${c.input_size} | ${spread(c.infer_ms_spread, 3)} | ${f(c.train_epoch_s, 1)} | ${c.train_epoch_measured.prompts} prompts, ${f(c.train_epoch_measured.seconds.median, 1)} s | ${mark(c.infer_ms <= g.controller_infer_ms_max)} |`);
  }
  out.push('');

  out.push('## Evaluation throughput', '');
  out.push('| model | condition | batch | prompts | max new tokens | prompts/min | generated tokens/s |', '|---|---|---:|---:|---:|---:|---:|');
  for (const e of r.eval) out.push(`| ${e.model} ${e.topology} | ${e.condition} | ${e.batch_size} | ${e.prompts} | ${e.max_new_tokens} | ${f(e.prompts_per_min, 1)} | ${f(e.tokens_per_s, 2)} |`);
  out.push('');

  if (r.compare?.length) {
    out.push('## Base and steered side by side (compare)', '');
    out.push(`Goal: the playground's compare, base and steered from ONE batch-2 generation, takes <= ${g.compare_over_plain_max ?? 1.3}x the wall time of one plain generation of the same length. Ratios per generated token, paired per repeat, median (min–max); "sequential" is a base generation followed by a steered one (what the lab did before).`, '');
    out.push('| model | topology | prompt / new tokens | plain (s) | compare (s) | sequential (s) | compare / plain | sequential / plain | goal |', '|---|---|---|---|---|---|---|---:|---|');
    for (const c of r.compare) {
      out.push(`| ${c.model} | ${c.topology} | ${c.prompt_tokens} / ${c.new_tokens} | ${spread(c.seconds.plain, 3)} | ${spread(c.seconds.compare, 3)} | ${spread(c.seconds.sequential, 3)} | ${f(c.compare_over_plain, 3)} (${f(c.compare_over_plain_spread?.min, 2)}–${f(c.compare_over_plain_spread?.max, 2)}) | ${f(c.sequential_over_plain, 3)} | ${mark(c.compare_over_plain <= (g.compare_over_plain_max ?? 1.3))} |`);
    }
    out.push('');
  }
  out.push(...throughputSections(r));

  if (r.browser) {
    out.push('## Browser (headless Chromium, ORT-web WASM)', '');
    out.push(r.browser.error ? `Not measured: ${r.browser.error}` : `${r.browser.note ?? ''}`, '');
  }
  if (r.notes.length || r.skipped.length) {
    out.push('## Notes', '');
    for (const n of r.notes) out.push(`- ${n}`);
    for (const s of r.skipped) out.push(`- ${s}`);
    out.push('');
  }
  return `${out.join('\n')}\n`;
}

/** The issue-14 sections: capture, load, peer, eval_batch (each a ratio measured in one run). */
function throughputSections(r: Results): string[] {
  const g = r.goals;
  const out: string[] = [];
  const ratio = (s: Summary | undefined) => spread(s, 3);
  if (r.capture?.length) {
    const max = g.capture_none_overhead_max ?? 0.03;
    out.push('## Capture: what reading residuals costs', '');
    out.push(`Raw onnxruntime-node sessions of one model, ratios to the unpatched graph paired per repeat. \`none\` = the lean graph (steering, no residual_stream: what the decode engine runs when a pass reads nothing), \`last\` = residuals of the last position only, \`all\` = the patched graph as loaded, less its \`logits_from\` input (every position). Goal: \`none\` within ${100 * max} % of unpatched, prefill and decode.`, '');
    out.push('| model | topology | pass | unpatched ms | none / unpatched | last / unpatched | all / unpatched | CPU-time none / last / all | goal (none, wall) |', '|---|---|---|---:|---|---|---|---|---|');
    for (const c of r.capture) {
      for (const [pass, d, msKey] of [[`prefill ${c.prefill_tokens} tokens`, c.prefill, 'ms'], [`decode step (context ${c.decode_context})`, c.decode, 'ms_per_step']] as const) {
        const q = d.ratio_to_unpatched;
        const cq = d.cpu_ratio_to_unpatched;
        out.push(`| ${c.model} | ${c.topology} | ${pass} | ${spread(d[msKey].unpatched, 1)} | ${ratio(q.none)} | ${ratio(q.last)} | ${ratio(q.all)} | ${f(cq.none.median, 3)} / ${f(cq.last.median, 3)} / ${f(cq.all.median, 3)} | ${mark(q.none.median <= 1 + max)} |`);
      }
    }
    out.push('');
  }
  if (r.prefill_head?.length) {
    out.push('## Prefill: the language-model head on the last position only', '');
    out.push('The loaded patched session, one prefill pass fetching only the cache, as the decode engine prefills: the head on every position (`logits_from` 0, as before) against the last alone (what the engine feeds). Ratio paired per repeat.', '');
    out.push('| model | topology | prompt tokens | every position ms | last only ms | last / every |', '|---|---|---:|---|---|---|');
    for (const h of r.prefill_head) for (const x of h.rows) out.push(`| ${h.model} | ${h.topology} | ${x.prompt_tokens} | ${spread(x.all_ms, 1)} | ${spread(x.last_ms, 1)} | ${ratio(x.ratio_last_to_all)} |`);
    out.push('');
  }
  if (r.load?.length) {
    const max = g.load_ratio_max ?? 1.2;
    out.push('## Load: steerable vs plain transformers.js', '');
    out.push(`Each load in a fresh process (order alternating), the self-check on; ratio paired per repeat. Goal: <= ${max}x.`, '');
    out.push('| model | steerable s | plain s | ratio | ORT create s (steerable / plain) | peak RSS MB (steerable / plain) | stage starts (s) | goal |', '|---|---|---|---|---|---|---|---|');
    for (const l of r.load) {
      const st = Object.entries(l.stage_starts_s as Record<string, number>).map(([k, v]) => `${k} ${f(v, 2)}`).join('; ');
      out.push(`| ${l.model} ${l.topology} (${mb(l.file_bytes)}) | ${spread(l.steerable_s)} | ${spread(l.plain_s)} | ${ratio(l.ratio)} | ${f(l.ort_create_s.steerable.median)} / ${f(l.ort_create_s.plain.median)} | ${l.peak_rss_mb.steerable} / ${l.peak_rss_mb.plain} | ${st} | ${mark(l.ratio.median <= max)} |`);
    }
    out.push('');
  }
  if (r.peer?.length) {
    out.push('## Peer: llama.cpp on the same weights', '');
    out.push('llama.cpp = the prebuilt library of node-llama-cpp 3.21.1 on GGUF files written by `lab export-gguf` from the ONNX model Steerlab runs; unsteered, batch 1, 1 and 2 threads. Steerlab = the decode engine, batch 1, a WAS-like steering matrix on every pass, on the session the loader made (onnxruntime-node\'s default of one intra-op thread per core, 2 here, spinning; one thread for a model as small as the organism: src/core/model/session-threads.ts) and, as \`steerlab t1\`, on a session of the same graph with one thread and no spinning. Decode rate after the first token; CPU ms per token = process CPU time (all threads). Ratio = Steerlab tok/s over the variant\'s, paired per repeat. `steerlab unsteered`: the same engine and session without the matrix (what steering costs Steerlab). `capi` and `+cvec`: llama.cpp through its C API (the first file), without and with the same matrix as a control vector read by llama.cpp\'s own loader (what steering costs llama.cpp). `onnxruntime floor`: no Steerlab code, the engine\'s session stepped by a bare loop (the engine\'s passes and tokens, caches fed back as returned, argmax): what any loop over onnxruntime could reach; floor / best = its rate over the best llama.cpp variant\'s. Goal: Steerlab steered >= the ratio below against unsteered llama.cpp at its best thread count and API. Models: `q4` is the fused graph with 4-bit MatMulNBits and fp16 activations (the browser form, model_q4f16.onnx); `q4 cpu` holds the same 4-bit codes with fp32 activations and accuracy_level 4 (int8 compute, the onnxruntime-genai CPU form, model_q4.onnx); the Q4_0 file holds those codes exactly.', '');
    out.push('| model | variant | tok/s | CPU ms per token | Steerlab / variant |', '|---|---|---|---|---|');
    for (const p of r.peer) {
      for (const v of p.variants) out.push(`| ${p.model} | ${v.variant} | ${spread(v.tok_s, 1)} | ${spread(v.cpu_ms_per_token, 2)} | ${v.variant === 'steerlab' ? '–' : ratio(v.steerlab_ratio)} |`);
    }
    out.push('', '| model | best llama.cpp variant | Steerlab / best | onnxruntime floor / best | best through node-llama-cpp\'s loop | Steerlab / that | goal (against the best) |', '|---|---|---|---|---|---|---|');
    for (const p of r.peer) {
      const min = g.peer_ratio_min?.[p.model];
      const node = p.ratio_vs_node_llama_cpp ? `| ${p.best_node_llama_cpp} | ${ratio(p.ratio_vs_node_llama_cpp)} ` : '| – | – ';
      out.push(`| ${p.model} | ${p.best_peer} | ${ratio(p.ratio_vs_best_peer)} | ${p.floor_vs_best_peer ? ratio(p.floor_vs_best_peer) : '–'} ${node}| ${min === undefined ? '–' : `>= ${min}: ${mark(p.ratio_vs_best_peer.median >= min)}`} |`);
    }
    out.push('');
  }
  if (r.eval_batch?.length) {
    out.push('## Evaluation throughput by batch size (eval runner)', '');
    out.push('The eval runner (runEval, as `lab eval` and the lab run it; `--batch B`) over chat prompts from the harmless-test split (the goal rows) or the ToxicChat test split (real user prompts, a long tail of lengths), two conditions per prompt (base, manual), greedy, prompts in file order, records taken four batches of B rows at a time and decoded shortest prompt first; prompts/min counts a prompt with both its records; speed-up over batch 1 paired per repeat. Same replies: that batch size wrote the replies of batch 1. Each run\'s wall time is split into the batched decode, the coherence passes (reply scoring and first-token KL: one record at a time, so that no record\'s numbers depend on the batch it ran in, each starting from the prompt prefix cache its decode kept) and the rest (medians, seconds); the decode speed-up is the decode\'s own, over batch 1.', '');
    out.push('| model | runtime | prompts | new tokens | batch | prompts/min | tokens/s | speed-up | decode speed-up | decode / coherence / other s | same replies | goal (best batch) |', '|---|---|---:|---:|---:|---|---|---|---|---|---|---|');
    for (const e of r.eval_batch) {
      const browser = String(e.runtime).includes('Chromium');
      const min = browser ? g.eval_batch_speedup_min?.chromium_wasm ?? 2 : g.eval_batch_speedup_min?.node ?? 3;
      // the goals are set on the harmless-test prompts; the ToxicChat rows show what real prompt lengths do
      const goalRow = (e.prompt_source ?? 'harmless-test') === 'harmless-test';
      for (const row of e.rows) {
        const goal = goalRow && row.batch === e.best_batch ? `>= ${min}x: ${mark(e.best_speedup.median >= min)}` : '';
        const split = row.decode_s ? `${row.decode_s.median.toFixed(1)} / ${row.measure_s.median.toFixed(1)} / ${row.other_s.median.toFixed(1)}` : '–';
        out.push(`| ${e.model} ${e.topology} | ${e.runtime}${e.lean_session ? ' (lean session)' : ''}${e.prompt_source === 'toxicchat-test' ? ', ToxicChat test prompts' : ''} | ${e.prompts} | ${e.max_new_tokens} | ${row.batch} | ${spread(row.prompts_per_min, 1)} | ${spread(row.tokens_per_s, 1)} | ${ratio(row.speedup)} | ${row.decode_speedup ? ratio(row.decode_speedup) : '–'} | ${split} | ${row.replies_equal === undefined ? '' : row.replies_equal ? 'yes' : 'NO'} | ${goal} |`);
      }
    }
    out.push('');
  }
  return out;
}
