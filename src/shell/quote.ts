/**
 * The one quoting function: everything that reaches a host's shell goes through it. POSIX
 * single quotes, left off a word that needs none.
 */
export function quote(s: string | number): string {
  const str = String(s);
  if (str !== '' && /^[A-Za-z0-9_/.,:=@%+-]+$/.test(str)) return str;
  return `'${str.replace(/'/g, `'\\''`)}'`;
}

/** A file mode as chmod takes it: 0644. */
export function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}
