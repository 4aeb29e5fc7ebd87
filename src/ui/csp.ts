/**
 * The lab's Content-Security-Policy: everything from our own origin, WebAssembly compilation allowed
 * ('wasm-unsafe-eval', which onnxruntime-web and tfjs-backend-wasm need) but no JavaScript eval, workers from our
 * origin or blob: (tfjs-backend-wasm's threaded build starts its workers from a blob), and nothing remote except
 * the Hugging Face hub for model downloads (huggingface.co, its CDN hosts *.huggingface.co and the Xet storage hosts
 * *.hf.co). Styles may be inline: Svelte sets style attributes (chart bars) and, in dev, injects <style> tags.
 * Used by vite.config.ts: as a response header (dev and preview servers, so workers are covered too) and as a
 * <meta> tag in the built index.html (for static hosting that sets no header).
 */
export const HUB_ORIGINS: readonly string[] = ['https://huggingface.co', 'https://*.huggingface.co', 'https://*.hf.co'];

export function contentSecurityPolicy(opts: { dev?: boolean; meta?: boolean } = {}): string {
  const connect = ["'self'", 'blob:', 'data:', ...HUB_ORIGINS];
  // Vite's dev client talks to its server over a WebSocket (hot reload).
  if (opts.dev) connect.push('ws://127.0.0.1:*', 'ws://localhost:*');
  const directives: [string, string[]][] = [
    ['default-src', ["'self'"]],
    ['script-src', ["'self'", "'wasm-unsafe-eval'", 'blob:']],
    ['worker-src', ["'self'", 'blob:']],
    ['connect-src', connect],
    ['style-src', ["'self'", "'unsafe-inline'"]],
    ['img-src', ["'self'", 'data:', 'blob:']],
    ['font-src', ["'self'"]],
    ['object-src', ["'none'"]],
    ['base-uri', ["'self'"]],
    ['form-action', ["'none'"]],
  ];
  // frame-ancestors is ignored (with a console warning) in a <meta> policy: only send it as a header.
  if (!opts.meta) directives.push(['frame-ancestors', ["'none'"]]);
  return directives.map(([k, v]) => `${k} ${v.join(' ')}`).join('; ');
}
