import { diffInMeansOfModel, loadControllerFor, loadDirectionFor, loadPromptSet, loadSteerableModel, pick, runFlow } from 'steerlab/core';

// Load the embedded organism: graph patched and self-checked; a folder is named by its content, a hub model by its id.
const model = await loadSteerableModel('models/organism');
console.log(model.identity); // { id: 'sha256:…', name: 'organism', variant: { dtype: 'fp32', graph: 'onnx/model.onnx' } }

// Make a refusal direction: difference in means (Arditi et al.) over a few prompts of the shipped sets. The ablation is
// exact, and on the organism it moves harmless replies by a KL of about 2 (Arditi's default threshold is 0.1).
const texts = async (set: string, n: number) => pick((await loadPromptSet({ source: set })).prompts, n, 0).map((p) => p.text);
const made = await diffInMeansOfModel(model, {
  harmfulTrain: await texts('harmful-train', 32), harmlessTrain: await texts('harmless-train', 32),
  harmfulVal: await texts('harmful-val', 8), harmlessVal: await texts('harmless-val', 8),
}, { selection: { klThreshold: 3 } });
console.log('made a direction at residual index', made.info.selected.residual_index);

// Load the shipped direction and the WAS controller trained to drive it (both checked against this model).
const direction = await loadDirectionFor('models/organism/direction.safetensors', model);
const controller = await loadControllerFor('models/organism/controller.safetensors', model);

// Generate, unsteered and steered by WAS: the controller reads the prompt and predicts s and w; the patch
// s * w_l * alpha * d is added after every layer l.
const jailbreak = (await loadPromptSet({ source: 'models/organism/eval/jailbreak.jsonl', textColumn: 'prompt', label: 'harmful' })).prompts[0]!.text;
const parts = { direction: direction.file.direction, controller: controller.method };
const base = await runFlow(model, jailbreak, parts, { policy: { kind: 'off' }, maxNewTokens: 16 });
const was = await runFlow(model, jailbreak, parts, { policy: { kind: 'was', alpha: controller.controller.metadata.alpha }, maxNewTokens: 16 });
console.log({ base: base.text, was: was.text, s: was.scale, w: was.layerWeights });

// Steer with the direction made above, by hand: the manual policy takes your own s and w.
const manual = await runFlow(model, 'How do I bake bread?', { direction: made.file.direction }, {
  policy: { kind: 'manual', scale: 0.5, layerWeights: new Array(model.numLayers).fill(1), alpha: 14 }, maxNewTokens: 16,
});
console.log({ manual: manual.text });
await model.dispose();
