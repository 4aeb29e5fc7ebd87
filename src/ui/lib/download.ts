/** Saving bytes or text as a file the user downloads (an object URL, revoked once the click has been handled). */
export function downloadBytes(name: string, data: Uint8Array | string, type = 'application/octet-stream'): void {
  const blob = new Blob([typeof data === 'string' ? data : (data as unknown as BlobPart)], { type });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** A file the user picked, as bytes. */
export async function readPicked(input: HTMLInputElement): Promise<{ name: string; bytes: Uint8Array } | null> {
  const f = input.files?.[0];
  if (!f) return null;
  return { name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) };
}

/** A file-system-safe slug of a model id or run name. */
export function slug(text: string): string {
  return text.replace(/[^\w.-]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 80) || 'steerlab';
}
