/**
 * Where the LLM worker looks for onnxruntime-web's run-time files: under the app's root, whether the app is served
 * from a host's root (dev: base '/') or from any sub-path (build: base './', resolved from the worker's own URL).
 */
import { expect, test } from 'vitest';
import { appRootUrl, ortWasmPaths } from '../../workers/ort-assets.js';

test('absolute base (dev server): the root of the origin, wherever the worker script is', () => {
  expect(appRootUrl('/', 'http://127.0.0.1:5173/workers/llm.worker.ts?worker_file&type=module').href).toBe('http://127.0.0.1:5173/');
  expect(appRootUrl('/lab', 'http://h/x/y.js').href).toBe('http://h/lab/');
  expect(appRootUrl('https://cdn.example/app/', 'http://h/x/y.js').href).toBe('https://cdn.example/app/');
});

test("relative base (build): one folder above the worker's assets/ folder, at any depth of sub-path", () => {
  expect(appRootUrl('./', 'http://h/assets/llm.worker-abc.js').href).toBe('http://h/');
  expect(appRootUrl('./', 'https://user.github.io/some/sub/path/assets/llm.worker-abc.js').href).toBe('https://user.github.io/some/sub/path/');
  expect(appRootUrl('', 'http://h/a/assets/llm.worker-abc.js').href).toBe('http://h/a/');
});

test('ort file URLs sit in ort/ under the root and carry the onnxruntime-web version', () => {
  const root = appRootUrl('./', 'http://h/sub/assets/llm.worker-abc.js');
  expect(ortWasmPaths(root, '1.31.0-dev')).toEqual({
    mjs: 'http://h/sub/ort/ort-wasm-simd-threaded.asyncify.mjs?v=1.31.0-dev',
    wasm: 'http://h/sub/ort/ort-wasm-simd-threaded.asyncify.wasm?v=1.31.0-dev',
  });
  expect(ortWasmPaths(root).mjs).toBe('http://h/sub/ort/ort-wasm-simd-threaded.asyncify.mjs');
});
